"""Vectorised multi-device, multi-edge MEC simulator (numpy over episodes × devices × edges).

``MECBatch`` simulates ``E`` independent episodes of one scenario at once. All devices act in
the same slot; every array has the episode axis first. The queue semantics are those of the
public Tang & Wong (2020) simulator, which the KD-D3QN and QECO work build on:

Slot order (τ = ``slot_s`` seconds; ``t`` counts from 0, a task's age in slot ``t`` is
``t - a + 1`` where ``a`` is its arrival slot):

1. **Local stage.** A task the MD keeps joins its FIFO local queue. An idle local processor
   pops the queue head (tasks older than ``D = deadline_slots`` are dropped on the way) and
   serves it ``f_L·τ/density`` Mbit this slot. A task that finishes gets delay = its age; one
   whose age reaches ``D`` unfinished is dropped. One task is served per slot per processor.
2. **Edge stage.** Each (MD, EN) pair has its own FIFO queue and processor at the EN. The EN's
   CPU (``f_E·τ``, minus background CPU pressure) is split equally among the pairs that were
   *active* at the end of the previous slot (a task in service or a non-empty queue), or by the
   FedMeta2Ag KKT rule (``f_ij ∝ sqrt(backlog cycles)``) with ``edge_allocation: kkt``.
3. **Transmit stage.** An offloaded task joins the MD's FIFO transmit queue; the head is sent at
   ``R·τ`` Mbit per slot (fixed rate, or Shannon rate ``B·log2(1 + SNR·|h|²)`` with per-slot
   fading). A task that finishes transmission is admitted to the MD's queue at its EN, where it
   is served from the next slot on, unless the EN lacks free memory or CPU for it: then it is an
   **offloading failure** (dropped, counted in ``offload_failures``).
4. The per-EN number of active queues is recorded (the load history in observations).

Tasks still unfinished after the ``D`` drain slots are dropped. Every dropped task counts with
delay ``D``. Energy: local (``power``: p_comp·t, or ``dvfs``: κ·f_L²·cycles), transmit
(p_tx·t_tx), idle (p_idle·time at the edge) and edge (p_edge × the task's share of the node).
QoE per task: ``cost = 2·(α·delay + (1−α)·energy_scale·E_md)`` with ``E_md`` the device's
energy (local + transmit + idle); reward ``R_base − cost`` if completed, ``−cost`` if dropped.

Observation per MD (meaningful where ``mask`` is True, i.e. a task arrived this slot): the
feature row of :mod:`common.mec.features` (the task, the device's queues and power mode, its own
backlog at every EN, and what every EN broadcasts: its load including transfers in progress, its
queues, its free CPU and memory), plus ``history`` [K, M]: the number of active queues at each
EN over the last K slots (oldest first), the LSTM/CNN input. Adding observation fields never
changes the queue semantics. Actions: ``0`` = local, ``j ∈ 1..M`` = offload to EN ``j``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.mec import features as fl
from common.mec.scenario import ScenarioConfig

# Task status codes (int8 per task).
NONE, LQ, LRUN, TXQ, TXRUN, EQ, ERUN, DONE, DROPPED, FAILED = range(10)
_EPISODE_IDS = itertools.count()  # a process-wide id per reset (keys caches of per-slot work)
# the terminal codes DONE, DROPPED, FAILED are the largest: ``status < DONE`` is "unresolved"


class Observation:
    """What the devices see at the start of a slot (arrays have the episode axis first).

    The feature rows are built when first read (a policy that ignores them, such as
    ``all_local``, costs nothing), from the simulator's state of that slot: reading them after
    the simulator has moved on is an error, not a silent look at another slot.
    """

    __slots__ = ("_build", "_features", "history", "mask", "t")

    def __init__(
        self,
        features: np.ndarray | None,
        mask: np.ndarray,
        history: np.ndarray,
        t: int,
        build: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self._features, self._build = features, build
        self.mask = mask
        """[E, N] bool: a task arrived at this MD in this slot (only those actions matter)."""
        self.history = history
        """[E, K, M] float32 number of active queues per EN over the last K slots, oldest first."""
        self.t = t
        """Slot index."""

    @property
    def features(self) -> np.ndarray:
        """[E, N, F] float32 feature rows (the table of :mod:`common.mec.features`)."""
        if self._features is None:
            self._features = self._build()
            self._build = None
        return self._features


@dataclass(frozen=True)
class DeviceProfile:
    """Per-device overrides of the scenario (non-IID clients); ``None`` keeps the scenario's."""

    arrival_prob: np.ndarray | None = None
    """[N] task probability per slot."""
    size_scale: np.ndarray | None = None
    """[N] multiplier on task sizes (the 0.1-Mbit grid is kept)."""
    density: np.ndarray | None = None
    """[N] computation density, Gcycles/Mbit (fixed for the episode)."""
    alpha: np.ndarray | None = None
    """[N] power mode α."""
    snr_offset_db: np.ndarray | None = None
    """[N] channel quality offset added to the scenario's mean SNR (Shannon channel)."""
    rate_scale: np.ndarray | None = None
    """[N] multiplier on the fixed uplink rate."""


class MECBatch:
    """``E`` parallel episodes of one scenario; see the module docstring for the semantics."""

    def __init__(
        self,
        scenario: ScenarioConfig,
        n_episodes: int = 1,
        profile: DeviceProfile | None = None,
    ) -> None:
        if n_episodes <= 0:
            raise ValueError(f"n_episodes must be positive, got {n_episodes}")
        self.sc = scenario.validate()
        self.profile = profile or DeviceProfile()
        self.E, self.N, self.M = n_episodes, scenario.n_devices, scenario.n_edges
        self.T, self.D, self.K = scenario.n_time, scenario.deadline_slots, scenario.history_slots
        self.n_actions = self.M + 1
        self.n_features = fl.n_features(self.M)
        self.tau = scenario.slot_s
        self.edge_ghz = np.asarray(scenario.edge_ghz_array(), dtype=np.float64)
        mem = scenario.edge_mem_array()
        self.edge_mem = None if mem is None else np.asarray(mem, dtype=np.float64)
        self._check_profile()
        self.t = 0
        self.done = True

    # ---------------------------------------------------------------------------------------
    def _check_profile(self) -> None:
        p = self.profile
        for name in (
            "arrival_prob",
            "size_scale",
            "density",
            "alpha",
            "snr_offset_db",
            "rate_scale",
        ):
            v = getattr(p, name)
            if v is not None and np.shape(v) != (self.N,):
                raise ValueError(f"profile.{name} must have shape ({self.N},), got {np.shape(v)}")
        if p.arrival_prob is not None and not np.all((p.arrival_prob >= 0) & (p.arrival_prob <= 1)):
            raise ValueError("profile.arrival_prob must be in [0, 1]")

    def _draw_episode(self, i: int, rng: np.random.Generator) -> None:
        """All randomness of episode ``i``, drawn up front from its own generator."""
        sc, p = self.sc, self.profile
        N, T = self.N, self.T
        prob = sc.effective_arrival_prob if p.arrival_prob is None else p.arrival_prob
        n_grid = int(round((sc.task_mbit_max - sc.task_mbit_min) / sc.task_mbit_step))
        arrive = rng.random((T, N)) < prob
        k = rng.integers(0, n_grid, size=(T, N))
        size = np.round(sc.task_mbit_min + k * sc.task_mbit_step, 10)
        if p.size_scale is not None:
            size = np.round(size * p.size_scale, 10)
        np.multiply(size, arrive, out=self.task_size[i])
        self.task_size[i, sc.n_slots :] = 0.0  # drain slots: no arrivals
        self.task_mem[i] = rng.uniform(sc.task_mem_gb_min, sc.task_mem_gb_max, size=(T, N))
        dens_choices = np.asarray(sc.density_gcycles_per_mbit)
        self.density[i] = dens_choices[rng.integers(0, len(dens_choices), size=N)]
        if p.density is not None:
            self.density[i] = p.density
        alpha_choices = np.asarray(sc.alpha_modes)
        self.alpha[i] = alpha_choices[rng.integers(0, len(alpha_choices), size=N)]
        if p.alpha is not None:
            self.alpha[i] = p.alpha
        if sc.channel == "shannon" and sc.fading == "rayleigh":
            self.fading[i] = rng.exponential(1.0, size=(T, N))
        self.noise[i] = rng.random((T, N))  # for randomised policies: reproducible per episode

    def _pressure(self) -> tuple[np.ndarray, np.ndarray]:
        """Background CPU and memory fractions [T, M] per slot and EN."""
        pr, T, M = self.sc.pressure, self.T, self.M
        t = np.arange(T, dtype=np.float64)
        if pr.shape == "constant":
            shape = np.ones(T)
        elif pr.shape == "ramp":
            shape = t / max(1, self.sc.n_slots - 1)
            shape = np.minimum(shape, 1.0)
        else:
            shape = 0.5 * (1.0 - np.cos(2 * np.pi * t * self.tau / pr.period_s))
        on = np.zeros(M)
        on[: int(np.ceil(pr.edges_fraction * M))] = 1.0
        cpu = pr.cpu_level * shape[:, None] * on[None, :]
        mem = pr.mem_level * shape[:, None] * on[None, :]
        return cpu, mem

    # ---------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, sizes: np.ndarray | None = None) -> Observation:
        """Start ``E`` new episodes; episode ``i`` draws from child ``i`` of
        ``SeedSequence(seed)``, so results do not depend on how episodes are batched.

        ``sizes`` [E, T, N] (Mbit, 0 = no task) replaces the drawn arrivals (for tests).
        """
        return self.reset_with(np.random.SeedSequence(seed).spawn(self.E), sizes)

    def reset_with(
        self, seeds: list[np.random.SeedSequence], sizes: np.ndarray | None = None
    ) -> Observation:
        """Like :meth:`reset` with one explicit seed sequence per episode."""
        E, N, M, T = self.E, self.N, self.M, self.T
        if len(seeds) != E:
            raise ValueError(f"need {E} episode seeds, got {len(seeds)}")
        shape = (E, T, N)
        self.task_size = np.empty(shape)
        self.task_mem = np.empty(shape)
        self.density = np.empty((E, N))
        self.alpha = np.empty((E, N))
        self.fading = np.ones(shape)  # per-slot |h|² of each device's uplink
        self.noise = np.empty(shape)
        for i, seq in enumerate(seeds):
            self._draw_episode(i, np.random.default_rng(seq))
        if sizes is not None:
            sizes = np.asarray(sizes, dtype=np.float64)
            if sizes.shape != shape:
                raise ValueError(f"sizes must have shape {shape}, got {sizes.shape}")
            self.task_size[:] = sizes
        self.task_mem *= self.task_size > 0
        self.cpu_bg, self.mem_bg = self._pressure()
        sc = self.sc
        self.local_mbit = sc.local_ghz * self.tau / self.density  # [E, N] Mbit per slot
        self.edge_gc = self.edge_ghz[None, :] * (1.0 - self.cpu_bg) * self.tau  # [T, M] Gcycles
        if sc.channel == "fixed":
            rs = 1.0 if self.profile.rate_scale is None else self.profile.rate_scale
            self.nominal_tx_mbit = np.broadcast_to(sc.rate_mbps * self.tau * rs, (N,)).copy()
        else:
            off = 0.0 if self.profile.snr_offset_db is None else self.profile.snr_offset_db
            self.snr = 10.0 ** ((sc.snr_db + np.broadcast_to(off, (N,))) / 10.0)  # [N]
            # mean of B·log2(1 + snr·h) over h ~ Exp(1), by quadrature on a fixed grid
            h = -np.log1p(-(np.arange(256) + 0.5) / 256)
            mean_rate = sc.bandwidth_mhz * np.log2(1 + self.snr[:, None] * h[None, :]).mean(1)
            self.nominal_tx_mbit = mean_rate * self.tau

        self.task_status = np.zeros(shape, dtype=np.int8)
        self.task_action = np.full(shape, -1, dtype=np.int8)
        self.task_delay = np.full(shape, np.nan)
        self.task_dropped = np.zeros(shape, dtype=bool)
        self.task_failed = np.zeros(shape, dtype=bool)
        self.task_done_slot = np.full(shape, -1, dtype=np.int32)
        self.e_local = np.zeros(shape)
        self.e_tx = np.zeros(shape)
        self.e_edge = np.zeros(shape)
        self.e_idle = np.zeros(shape)
        self.task_reward = np.full(shape, np.nan)
        self.edge_in = np.full(shape, np.nan)  # time (slots, fractional) the task reached the EN

        self._size = self.task_size.reshape(-1)
        self._mem = self.task_mem.reshape(-1)
        self._status = self.task_status.reshape(-1)
        self._action = self.task_action.reshape(-1)
        self._delay = self.task_delay.reshape(-1)
        self._dropped = self.task_dropped.reshape(-1)
        self._failed = self.task_failed.reshape(-1)
        self._done_slot = self.task_done_slot.reshape(-1)
        self._e_local = self.e_local.reshape(-1)
        self._e_tx = self.e_tx.reshape(-1)
        self._e_edge = self.e_edge.reshape(-1)
        self._e_idle = self.e_idle.reshape(-1)
        self._reward = self.task_reward.reshape(-1)
        self._edge_in = self.edge_in.reshape(-1)

        self.lp_a = np.full((E, N), -1, dtype=np.int64)
        self.lp_rem = np.zeros((E, N))
        self.lq_cnt = np.zeros((E, N), dtype=np.int64)
        self.lq_mbit = np.zeros((E, N))
        self.tx_a = np.full((E, N), -1, dtype=np.int64)
        self.tx_rem = np.zeros((E, N))
        self.tx_dst = np.zeros((E, N), dtype=np.int64)
        self.txq_cnt = np.zeros((E, N), dtype=np.int64)
        self.txq_mbit = np.zeros((E, N))
        self.ep_a = np.full((E, N, M), -1, dtype=np.int64)
        self.ep_rem = np.zeros((E, N, M))
        self.eq_cnt = np.zeros((E, N, M), dtype=np.int64)
        self.eq_mbit = np.zeros((E, N, M))
        self.mem_used = np.zeros((E, M))
        self.share = np.zeros((E, N, M))  # fraction of EN j's CPU for queue (i, j) this slot
        self.m_active = np.zeros((E, M))
        self.history = np.zeros((E, self.K, M), dtype=np.float32)
        self.completions = np.zeros((E, T), dtype=np.int64)
        self.unresolved = 0
        self._resolved: list[np.ndarray] = []
        self.step_seconds = 0.0
        self.t = 0
        self.done = False
        self.episode_uid = next(_EPISODE_IDS)
        return self.observe()

    # ---------------------------------------------------------------------------------------
    def observe(self) -> Observation:
        """Observation at the start of slot ``self.t`` (feature rows built on first read)."""
        t = min(self.t, self.T - 1)
        size = self.task_size[:, t, :]
        mask = (size > 0) & (not self.done)
        version = (self.episode_uid, self.t)

        def build() -> np.ndarray:
            if (self.episode_uid, self.t) != version:
                raise RuntimeError(
                    f"the features of slot {version[1]} were read after the simulator moved on "
                    f"to slot {self.t}; read obs.features before calling step()"
                )
            return self._features(t)

        return Observation(None, mask, self.history.copy(), self.t, build)

    def _features(self, t: int) -> np.ndarray:
        """The feature rows of every device at the start of slot ``t``."""
        E, N, M = self.E, self.N, self.M
        feats = np.empty((E, N, self.n_features), dtype=np.float32)
        feats[:, :, fl.TASK_MBIT] = self.task_size[:, t, :]
        feats[:, :, fl.DENSITY] = self.density
        feats[:, :, fl.TASK_MEM_GB] = self.task_mem[:, t, :]
        feats[:, :, fl.LOCAL_WAIT] = (self.lp_rem + self.lq_mbit) / self.local_mbit
        feats[:, :, fl.TX_WAIT] = (self.tx_rem + self.txq_mbit) / self.nominal_tx_mbit[None, :]
        feats[:, :, fl.ALPHA] = self.alpha
        backlog = self.ep_rem + self.eq_mbit  # [E, N, M]
        feats[:, :, fl.edge_block("backlog_mbit", M)] = backlog
        # what each EN broadcasts: work at it, transfers it is receiving, its queues (active or
        # about to be), its CPU left by background pressure and its free memory
        sending = (self.tx_a >= 0)[:, :, None] & (self.tx_dst[:, :, None] == np.arange(M))
        load = (backlog + sending * self.tx_rem[:, :, None]).sum(1)  # [E, M]
        queues = ((self.ep_a >= 0) | (self.eq_cnt > 0) | sending).sum(1)
        feats[:, :, fl.edge_block("edge_load_mbit", M)] = load[:, None, :]
        feats[:, :, fl.edge_block("edge_queues", M)] = queues[:, None, :]
        feats[:, :, fl.edge_block("edge_ghz", M)] = self.edge_ghz * (1.0 - self.cpu_bg[t])
        if self.edge_mem is None:
            feats[:, :, fl.edge_block("edge_mem_free_gb", M)] = 0.0
        else:
            free = self.edge_mem * (1.0 - self.mem_bg[t]) - self.mem_used  # [E, M]
            feats[:, :, fl.edge_block("edge_mem_free_gb", M)] = free[:, None, :]
        return feats

    def step(self, actions: np.ndarray) -> tuple[Observation, dict[str, np.ndarray]]:
        """Advance all episodes by one slot. ``actions`` [E, N] ints in ``0..M``.

        Returns the next observation and ``{"reward": [E], "device_reward": [E, N]}``: the QoE
        rewards of the tasks that finished (completed or dropped) in this slot, per episode and
        per device (the device whose task it was).
        """
        if self.done:
            raise RuntimeError("episode is over: call reset() first")
        actions = np.asarray(actions)
        if actions.shape != (self.E, self.N):
            raise ValueError(f"actions must have shape {(self.E, self.N)}, got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            if not np.all(np.equal(np.mod(actions, 1), 0)):
                raise ValueError("actions must be integers (0 = local, j = edge node j)")
            actions = actions.astype(np.int64)
        t0 = time.perf_counter()
        t = self.t
        size = self.task_size[:, t, :]
        new = size > 0
        bad = new & ((actions < 0) | (actions > self.M))
        if bad.any():
            raise ValueError(f"actions must be in 0..{self.M}; got {actions[bad][:5].tolist()}")
        self.task_action[:, t, :] = np.where(new, actions, -1)
        self._resolved = []
        self._local_stage(t, new & (actions == 0), size)
        self._edge_stage(t)
        self._tx_stage(t, new & (actions > 0), size)
        self._update_load()
        rewards, device_rewards = self._finish_resolved()
        self.t += 1
        if self.t >= self.T:
            final, final_devices = self._finalize()
            rewards += final
            device_rewards += final_devices
            self.done = True
        self.step_seconds += time.perf_counter() - t0
        return self.observe(), {"reward": rewards, "device_reward": device_rewards}

    # ---- stages ------------------------------------------------------------------------------
    # Internally every per-task array is addressed through a flat index
    # ``(e * T + a) * N + n`` and per-device state through ``e * N + n``: one integer index per
    # element is much cheaper in numpy than three.
    def _fi(self, en: np.ndarray, a: np.ndarray | int) -> np.ndarray:
        """Flat task index from a flat device index ``en = e·N + n`` and arrival slot ``a``."""
        e = en // self.N
        return (e * self.T + a) * self.N + (en - e * self.N)

    def _pop(self, t: int, en: np.ndarray, status: int, dst: np.ndarray | None):
        """Pop FIFO heads for the queues of devices ``en``; drop expired entries on the way.

        Returns (started mask, arrival slot of the started task, number of entries removed,
        Mbit removed with the expired entries).
        Queued entries are never older than D + 1 slots, so a window of D + 1 slots suffices.
        """
        win = np.arange(max(0, t - self.D), t + 1)
        fi = self._fi(en[:, None], win[None, :])
        st = self._status[fi] == status
        if dst is not None:
            st &= self._action[fi] == (dst[:, None] + 1)
        fresh = (t - win + 1) <= self.D
        valid = st & fresh[None, :]
        has = valid.any(1)
        a = win[np.argmax(valid, 1)]
        expired = st & ~fresh[None, :]
        removed = has.astype(np.int64)
        expired_mbit = 0.0
        if expired.any():
            self._resolve(fi[expired], t, completed=False)
            removed += expired.sum(1)
            expired_mbit = (self._size[fi] * expired).sum(1)
        return has, a, removed, expired_mbit

    def _local_stage(self, t: int, new_local: np.ndarray, size: np.ndarray) -> None:
        self._status[self._fi(np.flatnonzero(new_local), t)] = LQ
        self.lq_cnt += new_local
        self.lq_mbit += size * new_local
        lp_a, lp_rem = self.lp_a.reshape(-1), self.lp_rem.reshape(-1)
        lq_cnt, lq_mbit = self.lq_cnt.reshape(-1), self.lq_mbit.reshape(-1)
        en = np.flatnonzero((lp_a < 0) & (lq_cnt > 0))
        if len(en):
            has, a, removed, gone = self._pop(t, en, LQ, None)
            lq_cnt[en] -= removed
            lq_mbit[en] -= gone
            en, a = en[has], a[has]
            fi = self._fi(en, a)
            lp_a[en] = a
            lp_rem[en] = self._size[fi]
            lq_mbit[en] -= self._size[fi]
            self._status[fi] = LRUN
        en = np.flatnonzero(lp_a >= 0)
        if not len(en):
            return
        a = lp_a[en]
        fi = self._fi(en, a)
        cap = self.local_mbit.reshape(-1)[en]
        before = lp_rem[en]
        rem = before - cap
        lp_rem[en] = rem
        sc = self.sc
        if sc.energy == "power":
            self._e_local[fi] += sc.p_comp_w * self.tau * np.minimum(before, cap) / cap
        elif sc.energy == "dvfs":
            cycles = np.minimum(before, cap) * self.density.reshape(-1)[en] * 1e9
            self._e_local[fi] += sc.kappa * (sc.local_ghz * 1e9) ** 2 * cycles
        fin = rem <= 0
        end = fin | (t - a + 1 == self.D)
        if end.any():
            self._resolve(fi[end], t, completed=fin[end])
            lp_a[en[end]] = -1
            lp_rem[en[end]] = 0.0

    def _edge_stage(self, t: int) -> None:
        M = self.M
        ep_a, ep_rem = self.ep_a.reshape(-1), self.ep_rem.reshape(-1)
        eq_cnt, eq_mbit = self.eq_cnt.reshape(-1), self.eq_mbit.reshape(-1)
        enj = np.flatnonzero((ep_a < 0) & (eq_cnt > 0))
        if len(enj):
            has, a, removed, gone = self._pop(t, enj // M, EQ, enj % M)
            eq_cnt[enj] -= removed
            eq_mbit[enj] -= gone
            enj, a = enj[has], a[has]
            fi = self._fi(enj // M, a)
            ep_a[enj] = a
            ep_rem[enj] = self._size[fi]
            eq_mbit[enj] -= self._size[fi]
            self._status[fi] = ERUN
        enj = np.flatnonzero(ep_a >= 0)
        if not len(enj):
            return
        en, j = enj // M, enj % M
        a = ep_a[enj]
        fi = self._fi(en, a)
        share = self.share.reshape(-1)[enj]
        if self.sc.edge_allocation == "equal":
            # the reference's operation order (f_E·τ / density / m), bit for bit
            m = self.m_active.reshape(-1)[(en // self.N) * self.M + j]
            cap = self.edge_gc[t, j] / self.density.reshape(-1)[en] / m
        else:
            cap = self.edge_gc[t, j] * share / self.density.reshape(-1)[en]
        before = ep_rem[enj]
        rem = before - cap
        ep_rem[enj] = rem
        used = np.minimum(before, cap)
        if self.sc.p_edge_w > 0:
            self._e_edge[fi] += self.sc.p_edge_w * self.tau * share * used / cap
        fin = rem <= 0
        end = fin | (t - a + 1 == self.D)
        if end.any():
            frac = np.where(fin[end], used[end] / cap[end], 1.0)
            self._resolve(fi[end], t, completed=fin[end], frac=frac)
            ep_a[enj[end]] = -1
            ep_rem[enj[end]] = 0.0

    def _tx_stage(self, t: int, new_tx: np.ndarray, size: np.ndarray) -> None:
        self._status[self._fi(np.flatnonzero(new_tx), t)] = TXQ
        self.txq_cnt += new_tx
        self.txq_mbit += size * new_tx
        tx_a, tx_rem, tx_dst = (
            self.tx_a.reshape(-1),
            self.tx_rem.reshape(-1),
            self.tx_dst.reshape(-1),
        )
        txq_cnt, txq_mbit = self.txq_cnt.reshape(-1), self.txq_mbit.reshape(-1)
        en = np.flatnonzero((tx_a < 0) & (txq_cnt > 0))
        if len(en):
            has, a, removed, gone = self._pop(t, en, TXQ, None)
            txq_cnt[en] -= removed
            txq_mbit[en] -= gone
            en, a = en[has], a[has]
            fi = self._fi(en, a)
            tx_a[en] = a
            tx_rem[en] = self._size[fi]
            tx_dst[en] = self._action[fi].astype(np.int64) - 1
            txq_mbit[en] -= self._size[fi]
            self._status[fi] = TXRUN
        en = np.flatnonzero(tx_a >= 0)
        if not len(en):
            return
        a = tx_a[en]
        fi = self._fi(en, a)
        n = en % self.N
        if self.sc.channel == "fixed":
            cap = self.nominal_tx_mbit[n]
        else:
            h = self.fading.reshape(-1)[self._fi(en, t)]  # this slot's fading
            cap = np.maximum(self.sc.bandwidth_mhz * np.log2(1 + self.snr[n] * h) * self.tau, 1e-9)
        before = tx_rem[en]
        rem = before - cap
        tx_rem[en] = rem
        used = np.minimum(before, cap)
        if self.sc.p_tx_w > 0:
            self._e_tx[fi] += self.sc.p_tx_w * self.tau * used / cap
        fin = rem <= 0
        drop = ~fin & (t - a + 1 == self.D)
        if drop.any():
            self._resolve(fi[drop], t, completed=False)
        end = fin | drop
        tx_a[en[end]] = -1
        tx_rem[en[end]] = 0.0
        if fin.any():
            frac = used[fin] / cap[fin]  # part of the slot spent sending
            en, fi = en[fin], fi[fin]
            j = tx_dst[en]
            ok = self._admit(t, en, fi, j)
            if not ok.all():
                self._failed[fi[~ok]] = True
                self._resolve(fi[~ok], t, completed=False, failed=True)
                en, fi, j, frac = en[ok], fi[ok], j[ok], frac[ok]
            self._status[fi] = EQ
            enj = en * self.M + j
            self.eq_cnt.reshape(-1)[enj] += 1  # one arrival per device per slot: no duplicates
            self.eq_mbit.reshape(-1)[enj] += self._size[fi]
            self._edge_in[fi] = t + frac

    def _admit(self, t: int, en: np.ndarray, fi: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Admission of transmitted tasks at their EN: CPU and memory checks (KECO failures)."""
        ok = np.ones(len(en), dtype=bool)
        sc = self.sc
        if sc.cpu_fail_margin > 0 and sc.pressure.cpu_level > 0:
            free_ghz = self.edge_ghz[j] * (1.0 - self.cpu_bg[t, j])
            need_ghz = self._size[fi] * self.density.reshape(-1)[en] / (self.D * self.tau)
            ok &= free_ghz >= sc.cpu_fail_margin * need_ghz
        if self.edge_mem is not None:
            need = self._mem[fi]
            e = en // self.N
            # tasks reaching the same EN in one slot are admitted in device order
            for idx in np.lexsort((en, j, e)):
                if not ok[idx]:
                    continue
                ee, jj = e[idx], j[idx]
                free = self.edge_mem[jj] * (1.0 - self.mem_bg[t, jj]) - self.mem_used[ee, jj]
                if free >= need[idx]:
                    self.mem_used[ee, jj] += need[idx]
                else:
                    ok[idx] = False
        return ok

    def _update_load(self) -> None:
        active = (self.ep_a >= 0) | (self.eq_cnt > 0)
        m = active.sum(1)  # [E, M]
        self.m_active = m
        if self.sc.edge_allocation == "equal":
            self.share = active / np.maximum(m, 1)[:, None, :]
        else:
            cycles = (np.maximum(self.ep_rem, 0) + self.eq_mbit) * self.density[:, :, None]
            w = np.sqrt(np.maximum(cycles, 0.0)) * active  # float dust can be -1e-17
            self.share = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
        self.history[:, :-1] = self.history[:, 1:]
        self.history[:, -1, :] = m

    # ---- bookkeeping ------------------------------------------------------------------------
    def _resolve(self, fi: np.ndarray, t: int, completed, frac=None, failed: bool = False) -> None:
        """Mark tasks (flat indices) finished, completed or dropped, in slot ``t``."""
        completed = np.broadcast_to(np.asarray(completed, dtype=bool), fi.shape)
        a = (fi // self.N) % self.T
        self._status[fi] = np.where(completed, DONE, FAILED if failed else DROPPED)
        self._delay[fi] = np.where(completed, t - a + 1, self.D)
        self._dropped[fi] = ~completed
        self._done_slot[fi] = t
        edge_in = self._edge_in[fi]
        at_edge = ~np.isnan(edge_in)
        if at_edge.any():
            end_time = t + (1.0 if frac is None else frac)
            idle = self.sc.p_idle_w * self.tau * (end_time - np.nan_to_num(edge_in))
            self._e_idle[fi] = np.where(at_edge, idle, 0.0)
            if self.edge_mem is not None:
                f = fi[at_edge]
                j = self._action[f].astype(np.int64) - 1
                np.subtract.at(self.mem_used, (f // (self.T * self.N), j), self._mem[f])
        if completed.any():
            e_done = fi[completed] // (self.T * self.N)
            self.completions[:, t] += np.bincount(e_done, minlength=self.E)
        self._resolved.append(fi)

    def _finish_resolved(self) -> tuple[np.ndarray, np.ndarray]:
        """Compute the QoE reward of the tasks resolved this slot; returns the reward per
        episode [E] and per device [E, N]."""
        if not self._resolved:
            return np.zeros(self.E), np.zeros((self.E, self.N))
        fi = np.concatenate(self._resolved)
        self._resolved = []
        sc = self.sc
        e = fi // (self.T * self.N)
        alpha = self.alpha.reshape(-1)[e * self.N + fi % self.N]
        if sc.energy == "none":  # delay-only QoE (Tang & Wong)
            energy = 0.0
        else:
            energy = self._e_local[fi] + self._e_tx[fi] + self._e_idle[fi]
        cost = 2.0 * (alpha * self._delay[fi] + (1 - alpha) * sc.energy_scale * energy)
        reward = np.where(self._dropped[fi], -cost, sc.r_base - cost)
        self._reward[fi] = reward
        per_device = np.bincount(
            e * self.N + fi % self.N, weights=reward, minlength=self.E * self.N
        )
        return np.bincount(e, weights=reward, minlength=self.E), per_device.reshape(self.E, self.N)

    def _finalize(self) -> tuple[np.ndarray, np.ndarray]:
        """End of episode: tasks still in the system are dropped (their rewards as in
        :meth:`_finish_resolved`)."""
        arrived = self.task_size > 0
        left = arrived & (self.task_status < DONE)  # the terminal codes are the largest
        self.unresolved = int(left.sum())
        if self.unresolved:
            self._resolve(np.flatnonzero(left), self.T - 1, completed=False)
        return self._finish_resolved()

    # ---- results ----------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Metrics of DESIGN §3 over all episodes of the batch (call when ``done``)."""
        if not self.done:
            raise RuntimeError("metrics() needs a finished episode")
        return summarize([self])


def summarize(batches: list[MECBatch], seconds: float | None = None) -> dict[str, float]:
    """Aggregate per-task results of finished batches into the §3 metric dict."""

    arrived = [b.task_size > 0 for b in batches]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name)[m] for b, m in zip(batches, arrived, strict=True)])

    delay, dropped, reward = cat("task_delay"), cat("task_dropped"), cat("task_reward")
    failed, action = cat("task_failed"), cat("task_action")
    el, et, ei, ee = cat("e_local"), cat("e_tx"), cat("e_idle"), cat("e_edge")
    n_ep = sum(b.E for b in batches)
    tasks = len(delay)
    horizon_s = batches[0].T * batches[0].tau
    per_task = max(tasks, 1)
    completed = ~dropped
    wall = seconds if seconds is not None else sum(b.step_seconds for b in batches)
    return {
        "qoe": float(reward.sum() / per_task),
        "qoe_episode": float(reward.sum() / n_ep),
        "delay": float(delay.sum() / per_task),
        "delay_completed": float(delay[completed].mean()) if completed.any() else float("nan"),
        "drop_ratio": float(dropped.sum() / per_task),
        "energy_local": float(el.sum() / per_task),
        "energy_tx": float(et.sum() / per_task),
        "energy_idle": float(ei.sum() / per_task),
        "energy_edge": float(ee.sum() / per_task),
        "energy_total": float((el + et + ei + ee).sum() / per_task),
        "offload_failures": float(failed.sum() / n_ep),
        "offload_ratio": float((action > 0).sum() / per_task),
        "throughput": float(completed.sum() / n_ep / horizon_s),
        "tasks": int(tasks),
        "episodes": int(n_ep),
        "slots_per_s": float(n_ep * batches[0].T / wall) if wall > 0 else float("nan"),
    }
