"""Model decision (blueprint 2.4, policy type 2): a small ONNX model ranks the candidates for a
contended resource, under a hard deadline, and the priority rule decides when it cannot.

Only candidates that the credentials and the policy's rule already allow are ranked (policy.py
drops a candidate whose rule fails). The model sees one feature vector per candidate
(FEATURES, float32, in this order) and gives one score each; the highest wins, a tie keeps the
holder:

    urgency     the claimed urgency after the Fay's cap (rules.cap_urgency), / URGENCY_MAX
    holder      1 for the party holding the resource now
    stalled     1 when that holder's heartbeats stopped (session suspended): its task is stuck
    busy        1 when that holder declared a long operation (Heartbeat busy_ms, faults.md 18)
    held        how long the holder has held it, seconds / 60, at most 1
    actuator    1 for a motor or LED (resource class), else 0
    sensor      1 for a camera, GPS or sensor, else 0
    storage     1 for storage, else 0
    won         this Fay's preemptions won on this resource in the last HISTORY_S, / 5, at most 1
    lost        this Fay's preemptions suffered on this resource in the last HISTORY_S, / 5, at most 1
    exclusive   1 for write, execute or configure

`won` and `lost` are the recent handover history: the preemptions the engine audited
(`handover` entries of a policy), kept for HISTORY_S in memory beside the log (policy.History).

The model runs with onnxruntime on one thread (intra- and inter-op), on the caller's thread,
under a hard deadline (`deadline_ms`, default 2 ms): a watchdog thread stops a run still going
at its deadline (RunOptions.terminate), and an answer that comes after it is dropped, so a
decision that arrives after its time is never used (faults.md 59). Late, failing (a broken
file, a wrong shape, an exception) or absent (no file, no onnxruntime: an optional extra,
`pip install capwarden[model]`) all answer None with the reason; the policy then decides by
its rule, and counts and audits the fallback.
"""

import logging
import threading
import time

from capwarden.engine.rules import URGENCY_MAX

log = logging.getLogger("capwarden.engine")

FEATURES = ("urgency", "holder", "stalled", "busy", "held", "actuator", "sensor", "storage", "won", "lost",
            "exclusive")
HISTORY_S = 60.0
MODEL_FILE = "handover-ranker.onnx"
_ACTUATOR = ("motor", "led")
_SENSOR = ("camera", "gps", "sensor")


def features(urgency, holder, stalled, busy, held_s, resource_type, won, lost, mode):
    """One candidate's feature vector (a list of floats in FEATURES order)."""
    return [urgency / URGENCY_MAX, float(holder), float(stalled), float(busy), min(held_s / 60.0, 1.0),
            float(resource_type in _ACTUATOR), float(resource_type in _SENSOR), float(resource_type == "storage"),
            min(won / 5.0, 1.0), min(lost / 5.0, 1.0), float(mode != "read")]


def shipped_model():
    """The example model shipped with capwarden (tools/train_handover_model.py wrote it)."""
    from capwarden import resources

    # The repository's models/ folder, or capwarden/data/models in a wheel (resources._data).
    return resources.handover_model_path(MODEL_FILE)


class Ranker:
    """A loaded model and its deadline. `rank(rows)` -> (scores, "") or (None, why)."""

    def __init__(self, path=None, deadline_ms=2.0):
        self.path = path or shipped_model()
        self.deadline_s = deadline_ms / 1000.0
        self.fallbacks = 0               # decisions the rule made instead (late, failing, absent)
        self.runs = 0
        self.absent = None               # why there is no model, when there is none
        self._session = None
        self._np = None
        try:
            import numpy
            import onnxruntime
        except ImportError as exc:
            self.absent = "onnxruntime is not installed (pip install capwarden[model]): %s" % exc
            log.warning("handover model: %s; the priority rule decides", self.absent)
            return
        self._np = numpy
        self._ort = onnxruntime
        try:
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            self._session = onnxruntime.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        except Exception as exc:  # a missing or broken file; onnxruntime raises its own types
            self.absent = "cannot load the model %s: %s" % (self.path, str(exc)[:160])
            log.warning("handover model: %s; the priority rule decides", self.absent)
            self._session = None
            return
        self._watchdog = _Watchdog()

    def rank(self, rows):
        """Scores for the candidates' feature vectors, or (None, why) when the model is absent,
        late or failing: the caller falls back to the rule and counts it. Never raises."""
        self.runs += 1
        if self._session is None:
            return self._fallback(self.absent)
        np = self._np
        run_options = self._ort.RunOptions()
        try:
            x = np.asarray(rows, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            return self._fallback("the features could not be read: %s" % str(exc)[:120])
        t0 = time.perf_counter()
        self._watchdog.arm(run_options, t0 + self.deadline_s)
        try:
            out = self._session.run(None, {self._input: x}, run_options)[0]
        except Exception as exc:  # onnxruntime raises its own types; a terminated run raises too
            late = time.perf_counter() - t0 > self.deadline_s
            return self._fallback("late: stopped at %.3g ms" % (self.deadline_s * 1000) if late
                                  else "the model failed: %s" % str(exc)[:120])
        finally:
            self._watchdog.disarm()
        if time.perf_counter() - t0 > self.deadline_s:
            return self._fallback("late: answered after %.3g ms" % (self.deadline_s * 1000))
        try:
            scores = [float(v) for v in np.asarray(out, dtype=np.float64).reshape(len(rows))]
        except (ValueError, TypeError):
            return self._fallback("the model answered %s, not one score per candidate" % (getattr(out, "shape", "?"),))
        if not all(np.isfinite(scores)):
            return self._fallback("the model answered a score that is not a number")
        return scores, ""

    def _fallback(self, why):
        self.fallbacks += 1
        return None, why

    def close(self):
        if self._session is not None:
            self._watchdog.stop()


class _Watchdog:
    """One thread that stops a run still going at its deadline (RunOptions.terminate): the
    deadline holds for any model, while the run itself stays on the caller's thread (no
    hand-over to another thread on the fast path, which under load cost more than the run)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._armed = None            # (run_options, deadline) of the run going on
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="capwarden-ranker-watchdog", daemon=True)
        self._thread.start()

    def arm(self, run_options, deadline):
        with self._cv:
            self._armed = (run_options, deadline)
            self._cv.notify()

    def disarm(self):
        with self._cv:
            self._armed = None

    def stop(self):
        with self._cv:
            self._stopped = True
            self._cv.notify()

    def _loop(self):
        with self._cv:
            while not self._stopped:
                if self._armed is None:
                    self._cv.wait()
                    continue
                run_options, deadline = self._armed
                left = deadline - time.perf_counter()
                if left > 0:
                    self._cv.wait(left)
                    continue
                run_options.terminate = True
                self._armed = None
