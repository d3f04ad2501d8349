"""Building blocks of ``python -m experiments.deploy`` (and of the compose emulation test).

``pki`` makes the TLS certificates and the SuperNode key pairs, ``provision`` lays out what
each party holds (CKKS keys, teacher, certificates), ``procs`` starts and stops the Flower
processes by process group, and ``cli`` drives the ``flwr`` CLI against a SuperLink.
"""
