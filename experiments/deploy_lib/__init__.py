"""Building blocks of ``python -m experiments.deploy`` and ``python -m experiments.compose``.

``pki`` makes the TLS certificates and the SuperNode key pairs, ``provision`` lays out what
each party holds (CKKS keys, teacher, certificates), ``procs`` starts and stops the Flower
processes by process group, and ``cli`` drives the ``flwr`` CLI against a SuperLink.
"""
