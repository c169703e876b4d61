"""Train the example handover ranking model and write it as ONNX (issue 15 item 3).

    python tools/train_handover_model.py [--out models/handover-ranker.onnx] [--seed 15] [--n 20000]

The data is generated here: random contentions between the holder of a resource and a
requester, each described by the feature vector of capwarden.engine.ranker (FEATURES), and the
winner chosen by a hand-written judgement of what a careful operator would want:

- urgency counts most;
- a holder keeps some advantage (hysteresis), more when it is in a long operation (busy) or
  drives an actuator, and the longer it has held the resource;
- a stalled holder (heartbeats stopped) loses that advantage and more;
- a Fay that won many preemptions on this resource lately is held back (no thrashing), one
  that lost many is helped a little;
- noise, so the data is not separable by construction.

The model is pairwise logistic regression trained with numpy (gradient descent): P(a beats b)
= sigmoid(w . (x_a - x_b)), so the per-candidate score is w . x, one MatMul in ONNX: input
"features" float32 [N, 11], output "score" float32 [N, 1]. It prints its accuracy on held-out
pairs. The shipped model is this script's output with the defaults (deterministic seed).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host"))
from capwarden.engine.ranker import FEATURES, MODEL_FILE, features  # noqa: E402

CLASSES = ("other", "camera", "motor", "gps", "storage", "sensor", "led")


def judgement(f):
    """The generator's utility of one candidate (the label's source, not the model)."""
    u, holder, stalled, busy, held, act, _sensor, _storage, won, lost, _excl = f
    return (4.0 * u + holder * (0.8 + 0.9 * busy + 0.5 * act + 0.4 * held - 2.5 * stalled)
            - 1.2 * won + 0.4 * lost)


def scenario(rng):
    cls = CLASSES[rng.integers(len(CLASSES))]
    mode = ("read", "write", "execute", "configure")[rng.integers(4)]
    hold = features(int(rng.integers(11)), True, rng.random() < 0.15, rng.random() < 0.2, rng.random() * 120, cls,
                    int(rng.integers(6)), int(rng.integers(6)), mode)
    req = features(int(rng.integers(11)), False, False, False, 0.0, cls, int(rng.integers(6)),
                   int(rng.integers(6)), mode)
    return hold, req


def generate(n, rng):
    diffs, labels = [], []
    for _ in range(n):
        h, r = scenario(rng)
        margin = judgement(r) - judgement(h) + rng.normal(0, 0.3)
        diffs.append(np.subtract(r, h))
        labels.append(1.0 if margin > 0 else 0.0)
    return np.asarray(diffs, dtype=np.float64), np.asarray(labels)


def train(x, y, steps=3000, lr=0.5, l2=1e-4):
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        w -= lr * (x.T @ (p - y) / len(y) + l2 * w)
    return w


def to_onnx(w, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.asarray(w, dtype=np.float32).reshape(len(FEATURES), 1), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["score"])], "capwarden_handover_ranker",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", len(FEATURES)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])], [weights])
    model = helper.make_model(graph, producer_name="capwarden tools/train_handover_model.py",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8            # readable by onnxruntime releases from 1.10 on
    model.doc_string = "features: " + ", ".join(FEATURES)
    onnx.checker.check_model(model)
    tmp = path + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)


def main(argv=None):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(root, "models", MODEL_FILE))
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--n", type=int, default=20000)
    a = p.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    x, y = generate(a.n, rng)
    cut = int(len(y) * 0.8)
    w = train(x[:cut], y[:cut])
    acc = float(np.mean(((x[cut:] @ w) > 0) == (y[cut:] > 0.5)))
    to_onnx(w, a.out)
    print("wrote %s: %d features, held-out pairwise accuracy %.3f" % (a.out, len(FEATURES), acc))
    print("weights: " + ", ".join("%s=%.2f" % kv for kv in zip(FEATURES, w)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
