"""One simulated run compiled with numba: the event loop of :mod:`planner.simulator`.

:meth:`planner.simulator.CampaignSimulator.run` of a plan without a
replanner comes here; the Python loop there stays the one that re-plans.
Both follow the same model (the simulator's docstring) with the same draws
in the same order, so a seed gives the same run to the last digit in either:

- the random stream is CPython's Mersenne Twister (:class:`random.Random`),
  continued here from the state the run's generator handed over
  (``getstate()``): ``random()``, ``uniform``, ``expovariate`` and
  ``lognormvariate`` (Kinderman-Monahan) are CPython's formulas, operation
  for operation;
- events are ordered by (time, sequence number) and ready tasks by planner
  rank, both unique keys, so any correct heap pops them in heapq's order;
- instances' running tasks and held outputs are kept in insertion order
  (linked lists over task ids), as the Python loop's dicts and lists are.

State lives in flat arrays: per task (``missing``, ``where`` ...), per
instance (rows of ``inst_i``/``inst_f``, grown by doubling) and per fleet
entry. The kernel returns totals; the caller prices the overheads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np

_F = TypeVar("_F", bound=Callable[..., Any])
_NO_REFCOUNT: dict[str, Any] = {"_nrt": False}


def _compiled(fn: _F) -> _F:
    """``fn`` compiled by numba without reference counting: it allocates nothing, and
    counting the arrays handed to it (atomic operations on every call) would cost more
    than its work."""
    return cast(_F, numba.njit(cache=True, **_NO_REFCOUNT)(fn))

READY, DONE, RECLAIM = 0, 1, 2

# columns of the per-instance integer rows
I_ENTRY, I_POOL, I_CPU, I_ALIVE, I_READY, I_LOST, I_HUNGRY = 0, 1, 2, 3, 4, 5, 6
I_NRUN, I_RHEAD, I_RTAIL, I_OHEAD, I_OTAIL = 7, 8, 9, 10, 11
I_COLS = 12
# columns of the per-instance float rows: free memory (GiB), launch time (s)
F_MEM, F_LAUNCH = 0, 1
# counters: event sequence, events queued, instances, hungry instances, interruptions,
# redone tasks, tasks done, out of room (an event or instance past the arrays' capacity)
C_SEQ, C_EV, C_INST, C_HUNGRY, C_INTERRUPTIONS, C_REDONE, C_DONE, C_FULL = 0, 1, 2, 3, 4, 5, 6, 7
# accumulators: compute USD, idle USD, node seconds, inter-zone bytes
A_COMPUTE, A_IDLE, A_NODE_S, A_INTER_AZ = 0, 1, 2, 3

#: Status codes of :func:`run_kernel` (NO_ROOM: run it again with larger capacities).
OK, TOO_MANY_EVENTS, NO_ROOM = 0, 1, 2


@_compiled
def _genrand(mt: np.ndarray) -> int:
    """CPython's ``genrand_uint32``; ``mt[624]`` is the position in the 624 words."""
    i = mt[624]
    if i >= 624:
        for kk in range(624):
            y = (mt[kk] & 0x80000000) | (mt[(kk + 1) % 624] & 0x7FFFFFFF)
            v = mt[(kk + 397) % 624] ^ (y >> 1)
            if y & 1:
                v ^= 0x9908B0DF
            mt[kk] = v
        i = 0
    y = mt[i]
    mt[624] = i + 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y  # type: ignore[no-any-return]


@_compiled
def _random(mt: np.ndarray) -> float:
    a = _genrand(mt) >> 5
    b = _genrand(mt) >> 6
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)


@_compiled
def _expovariate(mt: np.ndarray, lambd: float) -> float:
    return -math.log(1.0 - _random(mt)) / lambd


@_compiled
def _lognormvariate(mt: np.ndarray, sigma: float) -> float:
    nv_magicconst = 4 * math.exp(-0.5) / math.sqrt(2.0)
    while True:
        u1 = _random(mt)
        u2 = 1.0 - _random(mt)
        z = nv_magicconst * (u1 - 0.5) / u2
        zz = z * z / 4.0
        if zz <= -math.log(u2):
            break
    return math.exp(0.0 + z * sigma)


@_compiled
def _push(ev_t: np.ndarray, ev_d: np.ndarray, cnt: np.ndarray, when: float, kind: int,
          i: int, task: int) -> int:
    """Queue an event; its sequence number (they only grow: a tie in time goes after)."""
    seq = cnt[C_SEQ]
    cnt[C_SEQ] = seq + 1
    k = cnt[C_EV]
    if k >= ev_t.size:
        cnt[C_FULL] = 1
        return seq  # type: ignore[no-any-return]
    cnt[C_EV] = k + 1
    while k > 0:
        parent = (k - 1) >> 1
        if ev_t[parent] <= when:
            break
        ev_t[k] = ev_t[parent]
        for c in range(4):
            ev_d[k, c] = ev_d[parent, c]
        k = parent
    ev_t[k] = when
    ev_d[k, 0] = seq
    ev_d[k, 1] = kind
    ev_d[k, 2] = i
    ev_d[k, 3] = task
    return seq  # type: ignore[no-any-return]


@_compiled
def _pop(ev_t: np.ndarray, ev_d: np.ndarray, cnt: np.ndarray
         ) -> tuple[float, int, int, int, int]:
    when, seq, kind, i, task = ev_t[0], ev_d[0, 0], ev_d[0, 1], ev_d[0, 2], ev_d[0, 3]
    size = cnt[C_EV] - 1
    cnt[C_EV] = size
    if size > 0:
        lt, ls = ev_t[size], ev_d[size, 0]
        k = 0
        while True:
            c = 2 * k + 1
            if c >= size:
                break
            if c + 1 < size and (ev_t[c + 1] < ev_t[c] or (
                    ev_t[c + 1] == ev_t[c] and ev_d[c + 1, 0] < ev_d[c, 0])):
                c += 1
            if lt < ev_t[c] or (lt == ev_t[c] and ls < ev_d[c, 0]):
                break
            ev_t[k] = ev_t[c]
            for m in range(4):
                ev_d[k, m] = ev_d[c, m]
            k = c
        ev_t[k] = lt
        for m in range(4):
            ev_d[k, m] = ev_d[size, m]
    return when, seq, kind, i, task


@_compiled
def _rpush(heap: np.ndarray, off: np.ndarray, size: np.ndarray, s: int, t: int) -> None:
    base = off[s]
    k = size[s]
    size[s] = k + 1
    while k > 0:
        parent = (k - 1) >> 1
        if heap[base + parent] <= t:
            break
        heap[base + k] = heap[base + parent]
        k = parent
    heap[base + k] = t


@_compiled
def _rpop(heap: np.ndarray, off: np.ndarray, size: np.ndarray, s: int) -> int:
    base = off[s]
    top = heap[base]
    n = size[s] - 1
    size[s] = n
    if n > 0:
        last = heap[base + n]
        k = 0
        while True:
            c = 2 * k + 1
            if c >= n:
                break
            if c + 1 < n and heap[base + c + 1] < heap[base + c]:
                c += 1
            if last < heap[base + c]:
                break
            heap[base + k] = heap[base + c]
            k = c
        heap[base + k] = last
    return top  # type: ignore[no-any-return]


@_compiled
def _ready_top(heap: np.ndarray, off: np.ndarray, size: np.ndarray, s: int,
               missing: np.ndarray, queued: np.ndarray) -> int:
    """Stage ``s``'s first ready task, dropping those whose input was lost; -1 if none."""
    while size[s] > 0 and missing[heap[off[s]]] > 0:
        queued[_rpop(heap, off, size, s)] = False
    return heap[off[s]] if size[s] > 0 else -1


@_compiled
def _launch(f: int, now: float, pool: int, inst_i: np.ndarray, inst_f: np.ndarray,
            ent_vcpus: np.ndarray, ent_mem: np.ndarray, ent_rate: np.ndarray,
            pool_armed: np.ndarray, zones: int, startup_s: float, mt: np.ndarray,
            ev_t: np.ndarray, ev_d: np.ndarray, cnt: np.ndarray) -> None:
    i = cnt[C_INST]
    if i >= inst_i.shape[0]:
        cnt[C_FULL] = 1
        return
    cnt[C_INST] = i + 1
    inst_i[i, :] = 0
    inst_i[i, I_ENTRY] = f
    inst_i[i, I_POOL] = pool
    inst_i[i, I_CPU] = ent_vcpus[f]
    inst_i[i, I_ALIVE] = 1
    inst_i[i, I_RHEAD] = inst_i[i, I_RTAIL] = inst_i[i, I_OHEAD] = inst_i[i, I_OTAIL] = -1
    inst_f[i, F_MEM] = ent_mem[f]
    inst_f[i, F_LAUNCH] = now
    _push(ev_t, ev_d, cnt, now + startup_s * (0.75 + (1.5 - 0.75) * _random(mt)), READY, i, 0)
    _arm(pool, now, ent_rate, pool_armed, zones, mt, ev_t, ev_d, cnt)


@_compiled
def _arm(p: int, now: float, ent_rate: np.ndarray, pool_armed: np.ndarray, zones: int,
         mt: np.ndarray, ev_t: np.ndarray, ev_d: np.ndarray, cnt: np.ndarray) -> None:
    rate = ent_rate[p // zones]
    if rate > 0 and not pool_armed[p]:
        pool_armed[p] = True
        _push(ev_t, ev_d, cnt, now + _expovariate(mt, rate), RECLAIM, p, 0)


@_compiled
def _release(i: int, now: float, tail_s: float, inst_i: np.ndarray, inst_f: np.ndarray,
             ent_price: np.ndarray, cnt: np.ndarray, acc: np.ndarray) -> None:
    inst_i[i, I_ALIVE] = 0
    if inst_i[i, I_HUNGRY]:
        inst_i[i, I_HUNGRY] = 0
        cnt[C_HUNGRY] -= 1
    launched = inst_f[i, F_LAUNCH]
    acc[A_NODE_S] += now - launched + tail_s
    price = ent_price[inst_i[i, I_ENTRY]]
    acc[A_COMPUTE] += (now - launched) / 3600.0 * price
    acc[A_IDLE] += tail_s / 3600.0 * price


@_compiled
def _set_hungry(i: int, hungry: bool, inst_i: np.ndarray, cnt: np.ndarray) -> None:
    if hungry and not inst_i[i, I_HUNGRY]:
        cnt[C_HUNGRY] += 1
    elif not hungry and inst_i[i, I_HUNGRY]:
        cnt[C_HUNGRY] -= 1
    inst_i[i, I_HUNGRY] = 1 if hungry else 0


@_compiled
def _enqueue(t: int, stage: np.ndarray, queued: np.ndarray, heap: np.ndarray, off: np.ndarray,
             size: np.ndarray) -> None:
    if not queued[t]:
        queued[t] = True
        _rpush(heap, off, size, stage[t], t)


@_compiled
def _dispatch(i: int, now: float, inst_i: np.ndarray, inst_f: np.ndarray, ev_t: np.ndarray,
              ev_d: np.ndarray, threads: np.ndarray, mem: np.ndarray, pred_ptr: np.ndarray,
              pred_idx: np.ndarray, pred_bytes: np.ndarray, first_s: np.ndarray,
              base_s: np.ndarray, ent_fam: np.ndarray, serves: np.ndarray, n_serves: np.ndarray,
              planned: np.ndarray, missing: np.ndarray, started: np.ndarray,
              queued: np.ndarray, tried: np.ndarray, where: np.ndarray, cons_left: np.ndarray,
              run_seq: np.ndarray, run_prev: np.ndarray, run_next: np.ndarray,
              heap: np.ndarray, off: np.ndarray, size: np.ndarray, unstarted: np.ndarray,
              mt: np.ndarray, cnt: np.ndarray, acc: np.ndarray, speed: float, sigma: float,
              zones: int, min_threads: int) -> None:
    """Start the ready tasks that fit on instance ``i``: planned stages first, then stealing."""
    f = inst_i[i, I_ENTRY]
    fam = ent_fam[f]
    free_cpu = inst_i[i, I_CPU]
    free_mem = inst_f[i, F_MEM]
    ns = n_serves[f]
    while free_cpu >= min_threads:  # below it no task fits: nothing to scan
        best = -1
        best_stage = -1
        skipped = False
        for k in range(ns):
            s = serves[f, k]
            if planned[f, s] <= 0:
                skipped = True
                continue
            t = _ready_top(heap, off, size, s, missing, queued)
            if t >= 0 and threads[t] <= free_cpu and mem[t] <= free_mem and (
                    best < 0 or t < best):
                best, best_stage = t, s
        if best < 0 and skipped:
            for k in range(ns):
                s = serves[f, k]
                if planned[f, s] > 0:
                    continue
                t = _ready_top(heap, off, size, s, missing, queued)
                if t >= 0 and threads[t] <= free_cpu and mem[t] <= free_mem and (
                        best < 0 or t < best):
                    best, best_stage = t, s
        if best < 0:
            break
        _rpop(heap, off, size, best_stage)
        queued[best] = False
        started[best] = True
        for e in range(pred_ptr[best], pred_ptr[best + 1]):
            cons_left[pred_idx[e]] -= 1
        if zones > 1:  # inputs held by nodes of another zone cross zones
            zone = inst_i[i, I_POOL] % zones
            for e in range(pred_ptr[best], pred_ptr[best + 1]):
                if inst_i[where[pred_idx[e]], I_POOL] % zones != zone:
                    acc[A_INTER_AZ] += pred_bytes[e]
        planned[f, best_stage] -= 1
        unstarted[best_stage] -= 1
        free_cpu -= threads[best]
        free_mem -= mem[best]
        if tried[best]:
            dur = base_s[fam, best] * speed * _lognormvariate(mt, sigma)
        else:
            tried[best] = True
            dur = first_s[fam, best]
        run_seq[best] = _push(ev_t, ev_d, cnt, now + dur, DONE, i, best)
        tail = inst_i[i, I_RTAIL]  # append to the instance's running tasks
        run_prev[best] = tail
        run_next[best] = -1
        if tail >= 0:
            run_next[tail] = best
        else:
            inst_i[i, I_RHEAD] = best
        inst_i[i, I_RTAIL] = best
        inst_i[i, I_NRUN] += 1
    inst_i[i, I_CPU] = free_cpu
    inst_f[i, F_MEM] = free_mem
    _set_hungry(i, free_cpu > 0, inst_i, cnt)


@_compiled
def _serves_unstarted(f: int, serves: np.ndarray, n_serves: np.ndarray,
                      unstarted: np.ndarray) -> bool:
    for k in range(n_serves[f]):
        if unstarted[serves[f, k]] > 0:
            return True
    return False


@_compiled
def _unstart(t: int, f: int, stage: np.ndarray, started: np.ndarray, unstarted: np.ndarray,
             planned: np.ndarray, cnt: np.ndarray, pred_ptr: np.ndarray, pred_idx: np.ndarray,
             cons_left: np.ndarray) -> None:
    """``t`` must run again: back to the unstarted count, its inputs needed again."""
    started[t] = False
    unstarted[stage[t]] += 1
    planned[f, stage[t]] += 1
    cnt[C_REDONE] += 1
    for e in range(pred_ptr[t], pred_ptr[t + 1]):
        cons_left[pred_idx[e]] += 1


@_compiled
def _missing_inputs(t: int, pred_ptr: np.ndarray, pred_idx: np.ndarray, done: np.ndarray) -> int:
    m = 0
    for e in range(pred_ptr[t], pred_ptr[t + 1]):
        if not done[pred_idx[e]]:
            m += 1
    return m


@numba.njit(cache=True)
def run_kernel(stage: np.ndarray, threads: np.ndarray, mem: np.ndarray, n_deps: np.ndarray,
               succ_ptr: np.ndarray, succ_idx: np.ndarray, pred_ptr: np.ndarray,
               pred_idx: np.ndarray, pred_bytes: np.ndarray, stage_tasks: np.ndarray,
               first_s: np.ndarray, base_s: np.ndarray, ent_fam: np.ndarray,
               ent_vcpus: np.ndarray, ent_mem: np.ndarray, ent_price: np.ndarray,
               ent_rate: np.ndarray, ent_instances: np.ndarray, planned: np.ndarray,
               mt: np.ndarray, speed: float, sigma: float, zones: int, idle_s: float,
               startup_s: float, reclaim_share: float, outage_mean_s: float,
               max_events: int, inst_cap: int, ev_cap: int) -> tuple[int, float, int, int, int, int, np.ndarray]:
    """One run; (status, makespan s, interruptions, redone, instances, tasks done, totals).

    ``planned`` (entry x stage tasks) and ``mt`` (the generator's state) are consumed.
    Instances and queued events beyond ``inst_cap`` and ``ev_cap`` stop the run with
    :data:`NO_ROOM`: the caller runs it again, from the same state, with more room.
    """
    n = stage.size
    n_stages = stage_tasks.size
    n_ent = ent_vcpus.size
    serves = np.zeros((n_ent, n_stages), np.int64)
    n_serves = np.zeros(n_ent, np.int64)
    serve_mask = np.zeros(n_ent, np.int64)
    for f in range(n_ent):
        for s in range(n_stages):
            if planned[f, s] != 0:
                serves[f, n_serves[f]] = s
                n_serves[f] += 1
                serve_mask[f] |= 1 << s
    missing = n_deps.copy()
    done = np.zeros(n, np.bool_)
    started = np.zeros(n, np.bool_)
    queued = n_deps == 0
    tried = np.zeros(n, np.bool_)
    where = np.full(n, -1, np.int64)
    cons_left = succ_ptr[1:] - succ_ptr[:-1]
    run_seq = np.full(n, -1, np.int64)
    run_prev = np.empty(n, np.int64)
    run_next = np.empty(n, np.int64)
    out_next = np.empty(n, np.int64)
    off = np.zeros(n_stages, np.int64)
    for s in range(1, n_stages):
        off[s] = off[s - 1] + stage_tasks[s - 1]
    size = np.zeros(n_stages, np.int64)
    heap = np.empty(n, np.int64)
    for t in range(n):  # ascending: each stage's heap is ordered already
        if n_deps[t] == 0:
            heap[off[stage[t]] + size[stage[t]]] = t
            size[stage[t]] += 1
    unstarted = stage_tasks.copy()
    n_pools = n_ent * zones
    pool_armed = np.zeros(n_pools, np.bool_)
    pool_outage_end = np.zeros(n_pools)
    inst_i = np.zeros((inst_cap, I_COLS), np.int64)
    inst_f = np.zeros((inst_cap, 2))
    ev_t = np.empty(ev_cap)
    ev_d = np.empty((ev_cap, 4), np.int64)
    cnt = np.zeros(8, np.int64)
    acc = np.zeros(4)
    lost = np.empty(n + 2 * pred_idx.size + 1, np.int64)  # outputs lost at a reclaim
    reclaimed = np.empty(inst_cap, np.int64)
    min_threads = threads.min() if n else 1
    status, finish = _event_loop(
        stage, threads, succ_ptr, succ_idx, pred_ptr, pred_idx, pred_bytes, first_s, base_s,
        ent_fam, ent_vcpus, ent_mem, ent_price, ent_rate, ent_instances, planned, mt, serves,
        n_serves, serve_mask, missing, done, started, queued, tried, where, cons_left, run_seq,
        run_prev, run_next, out_next, heap, off, size, unstarted, pool_armed, pool_outage_end,
        inst_i, inst_f, ev_t, ev_d, cnt, acc, lost, reclaimed, mem, speed, sigma, zones, idle_s,
        startup_s, reclaim_share, outage_mean_s, max_events, min_threads)
    return (status, finish, cnt[C_INTERRUPTIONS], cnt[C_REDONE], cnt[C_INST], cnt[C_DONE],
            acc)


def kernel_loaded() -> bool:
    """Whether this process has loaded (from numba's cache) or compiled :func:`run_kernel`."""
    return bool(run_kernel.signatures)


@_compiled
def _event_loop(stage: np.ndarray, threads: np.ndarray, succ_ptr: np.ndarray,
                succ_idx: np.ndarray, pred_ptr: np.ndarray, pred_idx: np.ndarray,
                pred_bytes: np.ndarray, first_s: np.ndarray, base_s: np.ndarray,
                ent_fam: np.ndarray, ent_vcpus: np.ndarray, ent_mem: np.ndarray,
                ent_price: np.ndarray, ent_rate: np.ndarray, ent_instances: np.ndarray,
                planned: np.ndarray, mt: np.ndarray, serves: np.ndarray, n_serves: np.ndarray,
                serve_mask: np.ndarray, missing: np.ndarray, done: np.ndarray,
                started: np.ndarray, queued: np.ndarray, tried: np.ndarray, where: np.ndarray,
                cons_left: np.ndarray, run_seq: np.ndarray, run_prev: np.ndarray,
                run_next: np.ndarray, out_next: np.ndarray, heap: np.ndarray, off: np.ndarray,
                size: np.ndarray, unstarted: np.ndarray, pool_armed: np.ndarray,
                pool_outage_end: np.ndarray, inst_i: np.ndarray, inst_f: np.ndarray,
                ev_t: np.ndarray, ev_d: np.ndarray, cnt: np.ndarray, acc: np.ndarray,
                lost: np.ndarray, reclaimed: np.ndarray, mem: np.ndarray, speed: float,
                sigma: float, zones: int, idle_s: float, startup_s: float,
                reclaim_share: float, outage_mean_s: float, max_events: int,
                min_threads: int) -> tuple[int, float]:
    """The run's events in time order, on the state :func:`run_kernel` set up."""
    n = stage.size
    n_ent = ent_vcpus.size
    for f in range(n_ent):
        for k in range(ent_instances[f]):
            _launch(f, 0.0, f * zones + k % zones, inst_i, inst_f, ent_vcpus, ent_mem, ent_rate,
                    pool_armed, zones, startup_s, mt, ev_t, ev_d, cnt)
    n_events = 0
    finish = 0.0
    status = OK
    while cnt[C_EV] > 0 and cnt[C_DONE] < n:
        if cnt[C_FULL]:
            status = NO_ROOM
            break
        now, ev_seq, kind, i, task = _pop(ev_t, ev_d, cnt)
        n_events += 1
        if n_events > max_events:
            status = TOO_MANY_EVENTS
            break
        if kind == DONE:  # most events: a task is done
            if not inst_i[i, I_ALIVE] or run_seq[task] != ev_seq:
                continue
            run_seq[task] = -1
            p, q = run_prev[task], run_next[task]
            if p >= 0:
                run_next[p] = q
            else:
                inst_i[i, I_RHEAD] = q
            if q >= 0:
                run_prev[q] = p
            else:
                inst_i[i, I_RTAIL] = p
            inst_i[i, I_NRUN] -= 1
            inst_i[i, I_CPU] += threads[task]
            inst_f[i, F_MEM] += mem[task]
            done[task] = True
            where[task] = i
            if succ_ptr[task + 1] > succ_ptr[task]:  # its output is kept for its consumers
                out_next[task] = -1
                tail = inst_i[i, I_OTAIL]
                if tail >= 0:
                    out_next[tail] = task
                else:
                    inst_i[i, I_OHEAD] = task
                inst_i[i, I_OTAIL] = task
            cnt[C_DONE] += 1
            finish = now
            newly = 0
            for e in range(succ_ptr[task], succ_ptr[task + 1]):
                s = succ_idx[e]
                if started[s]:
                    continue
                missing[s] -= 1
                if missing[s] == 0:
                    _enqueue(s, stage, queued, heap, off, size)
                    newly |= 1 << stage[s]
            _dispatch(i, now, inst_i, inst_f, ev_t, ev_d, threads, mem, pred_ptr, pred_idx,
                      pred_bytes, first_s, base_s, ent_fam, serves, n_serves, planned, missing,
                      started, queued, tried, where, cons_left, run_seq, run_prev, run_next, heap,
                      off, size, unstarted, mt, cnt, acc, speed, sigma, zones, min_threads)
            if newly and cnt[C_HUNGRY] > 0 and size.sum() > 0:
                # Wake idle instances (of any offer) that serve the new tasks' stages; once
                # no task is queued anywhere, the others would find nothing to start.
                for j in range(cnt[C_INST]):
                    if inst_i[j, I_HUNGRY] and j != i and serve_mask[inst_i[j, I_ENTRY]] & newly:
                        _dispatch(j, now, inst_i, inst_f, ev_t, ev_d, threads, mem, pred_ptr,
                                  pred_idx, pred_bytes, first_s, base_s, ent_fam, serves, n_serves,
                                  planned, missing, started, queued, tried, where, cons_left,
                                  run_seq, run_prev, run_next, heap, off, size, unstarted, mt, cnt,
                                  acc, speed, sigma, zones, min_threads)
                        if size.sum() == 0:
                            break
            if inst_i[i, I_NRUN] == 0:
                _maybe_release(i, now, idle_s, inst_i, inst_f, ent_price, serves, n_serves,
                               unstarted, cnt, acc)
            continue
        if kind == RECLAIM:
            p = i
            pool_armed[p] = False
            n_members = 0
            for j in range(cnt[C_INST]):
                if inst_i[j, I_POOL] == p and inst_i[j, I_ALIVE]:
                    n_members += 1
            if n_members == 0:
                continue
            if outage_mean_s > 0:
                pool_outage_end[p] = now + _expovariate(mt, 1.0 / outage_mean_s)
            n_lost = 0
            n_reclaimed = 0
            for j in range(cnt[C_INST]):
                if inst_i[j, I_POOL] != p or not inst_i[j, I_ALIVE]:
                    continue
                if _random(mt) >= reclaim_share:
                    continue
                cnt[C_INTERRUPTIONS] += 1
                inst_i[j, I_LOST] = 1
                f = inst_i[j, I_ENTRY]
                t = inst_i[j, I_RHEAD]
                while t >= 0:
                    _unstart(t, f, stage, started, unstarted, planned, cnt, pred_ptr, pred_idx,
                             cons_left)
                    for e in range(pred_ptr[t], pred_ptr[t + 1]):
                        q = pred_idx[e]
                        if done[q] and inst_i[where[q], I_LOST]:
                            lost[n_lost] = q
                            n_lost += 1
                    missing[t] = _missing_inputs(t, pred_ptr, pred_idx, done)
                    if missing[t] == 0:
                        _enqueue(t, stage, queued, heap, off, size)
                    run_seq[t] = -1
                    t = run_next[t]
                inst_i[j, I_RHEAD] = inst_i[j, I_RTAIL] = -1
                inst_i[j, I_NRUN] = 0
                _release(j, now, 0.0, inst_i, inst_f, ent_price, cnt, acc)
                t = inst_i[j, I_OHEAD]
                while t >= 0:
                    lost[n_lost] = t
                    n_lost += 1
                    t = out_next[t]
                reclaimed[n_reclaimed] = f
                n_reclaimed += 1
            _lose_outputs(lost, n_lost, inst_i, stage, succ_ptr, succ_idx, pred_ptr, pred_idx,
                          planned, missing, done, started, queued, where, cons_left, heap, off,
                          size, unstarted, cnt)
            for k in range(n_reclaimed):  # replacements, once the lost work is known
                f = reclaimed[k]
                if ent_instances[f] > 0 and _serves_unstarted(f, serves, n_serves, unstarted):
                    _launch(f, max(now, pool_outage_end[p]), p, inst_i, inst_f, ent_vcpus,
                            ent_mem, ent_rate, pool_armed, zones, startup_s, mt, ev_t, ev_d, cnt)
            for f in range(n_ent):  # lost inputs of an entry that had left
                alive = False
                for j in range(cnt[C_INST]):
                    if inst_i[j, I_ENTRY] == f and inst_i[j, I_ALIVE]:
                        alive = True
                        break
                if (not alive and ent_instances[f] > 0
                        and _serves_unstarted(f, serves, n_serves, unstarted)):
                    _launch(f, now, f * zones, inst_i, inst_f, ent_vcpus, ent_mem, ent_rate,
                            pool_armed, zones, startup_s, mt, ev_t, ev_d, cnt)
            _arm(p, now, ent_rate, pool_armed, zones, mt, ev_t, ev_d, cnt)
            for j in range(cnt[C_INST]):
                if inst_i[j, I_ALIVE] and inst_i[j, I_READY]:
                    _dispatch(j, now, inst_i, inst_f, ev_t, ev_d, threads, mem, pred_ptr, pred_idx,
                              pred_bytes, first_s, base_s, ent_fam, serves, n_serves, planned,
                              missing, started, queued, tried, where, cons_left, run_seq, run_prev,
                              run_next, heap, off, size, unstarted, mt, cnt, acc, speed, sigma,
                              zones, min_threads)
            continue
        if not inst_i[i, I_ALIVE]:
            continue
        inst_i[i, I_READY] = 1  # the only kind left: an instance is ready
        _dispatch(i, now, inst_i, inst_f, ev_t, ev_d, threads, mem, pred_ptr, pred_idx, pred_bytes,
                  first_s, base_s, ent_fam, serves, n_serves, planned, missing, started, queued,
                  tried, where, cons_left, run_seq, run_prev, run_next, heap, off, size, unstarted,
                  mt, cnt, acc, speed, sigma, zones, min_threads)
        _maybe_release(i, now, idle_s, inst_i, inst_f, ent_price, serves, n_serves, unstarted,
                       cnt, acc)
    if cnt[C_FULL]:
        status = NO_ROOM
    if status == OK and cnt[C_DONE] == n:
        for j in range(cnt[C_INST]):
            if inst_i[j, I_ALIVE]:
                _release(j, max(finish, inst_f[j, F_LAUNCH]), idle_s, inst_i, inst_f, ent_price,
                         cnt, acc)
    return status, finish


@_compiled
def _maybe_release(i: int, now: float, idle_s: float, inst_i: np.ndarray, inst_f: np.ndarray,
                   ent_price: np.ndarray, serves: np.ndarray, n_serves: np.ndarray,
                   unstarted: np.ndarray, cnt: np.ndarray, acc: np.ndarray) -> None:
    if (inst_i[i, I_ALIVE] and inst_i[i, I_READY] and inst_i[i, I_NRUN] == 0
            and not _serves_unstarted(inst_i[i, I_ENTRY], serves, n_serves, unstarted)):
        _release(i, now, idle_s, inst_i, inst_f, ent_price, cnt, acc)


@_compiled
def _lose_outputs(lost: np.ndarray, n_lost: int, inst_i: np.ndarray, stage: np.ndarray,
                  succ_ptr: np.ndarray, succ_idx: np.ndarray, pred_ptr: np.ndarray,
                  pred_idx: np.ndarray, planned: np.ndarray, missing: np.ndarray,
                  done: np.ndarray, started: np.ndarray, queued: np.ndarray, where: np.ndarray,
                  cons_left: np.ndarray, heap: np.ndarray, off: np.ndarray, size: np.ndarray,
                  unstarted: np.ndarray, cnt: np.ndarray) -> None:
    """Done tasks whose outputs vanished while someone still needs them: redo them."""
    stack = lost  # filtered in place; room for the outputs and twice the inputs
    top = 0
    for k in range(n_lost):
        t = lost[k]
        if done[t] and cons_left[t] > 0:
            stack[top] = t
            top += 1
    while top > 0:
        top -= 1
        t = stack[top]
        if not done[t]:
            continue
        done[t] = False
        cnt[C_DONE] -= 1
        _unstart(t, inst_i[where[t], I_ENTRY], stage, started, unstarted, planned, cnt,
                 pred_ptr, pred_idx, cons_left)
        for e in range(succ_ptr[t], succ_ptr[t + 1]):
            if not started[succ_idx[e]]:
                missing[succ_idx[e]] += 1
        for e in range(pred_ptr[t], pred_ptr[t + 1]):
            p = pred_idx[e]
            if done[p] and inst_i[where[p], I_LOST]:
                stack[top] = p
                top += 1
        missing[t] = _missing_inputs(t, pred_ptr, pred_idx, done)
        if missing[t] == 0:
            _enqueue(t, stage, queued, heap, off, size)

