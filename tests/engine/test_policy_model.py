"""Handover policy `model` (issue 15 item 3; blueprint 2.4 type 2): the shipped ONNX model ranks
the candidates the rule allows, under its deadline; late, broken, failing or absent it falls
back to the rule, counted and audited; faults.md 58, 59."""

import logging
import os
import sys

from capwarden.engine import ranker
from capwarden.engine.ranker import FEATURES, Ranker, features
from enginerig import refusal, runtime, wait_until
from policyrig import audit_entries, settings, take

FAYS = {w: {"max_urgency": 10} for w in "AB"}


def model(world, **m):
    return settings(world, [("camera", "model", {"rule": "urgency"})], FAYS, model=m)


def test_the_model_decides_a_stalled_holder_loses_what_the_rule_would_keep(world, in_process, run):
    async def scenario():
        app = await in_process(handover=model(world, deadline_ms=50))   # generous: this tests the ranking
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        sa = await take(world, a, "camera", "execute", "A", urgency=5)
        # Equal urgency, healthy holder: the model keeps the holder (the rule, a tie, would too).
        await sa.heartbeat()
        assert await refusal(take(world, b, "camera", "execute", "B", urgency=5)) == "E_RESOURCE_BUSY"
        first = audit_entries(app, "policy")[-1]
        assert first["decided_by"] == "model" and "fallback" not in first
        assert first["inputs"]["holder"]["model_score"] > first["inputs"]["requester"]["model_score"]
        # The holder's heartbeats stop (connection up): suspended, its task stuck. The rule would
        # still keep it (a tie); the model gives it to the requester.
        assert await wait_until(lambda: sa.suspended, 10)
        sb = await take(world, b, "camera", "execute", "B", urgency=5)
        assert sb.state == "active" and await sa.ended(5) == "preempted"
        last = audit_entries(app, "policy")[-1]
        assert last["outcome"] == "grant" and last["decided_by"] == "model"
        assert last["inputs"]["requester"]["score"] == last["inputs"]["holder"]["score"] == 5
        assert app.engine.policies.ranker.fallbacks == 0

    run(scenario())


def _fallback_case(world, in_process, run, handover, why):
    async def scenario():
        app = await in_process(handover=handover)
        a, b = await runtime(app, "rtA"), await runtime(app, "rtB")
        await take(world, a, "camera", "execute", "A", urgency=2)
        sb = await take(world, b, "camera", "execute", "B", urgency=7)      # the rule: 7 > 2
        assert sb.state == "active"
        pol = audit_entries(app, "policy")[-1]
        assert pol["decided_by"] == "rule" and why in pol["fallback"] and pol["fallbacks"] == 1
        assert app.engine.policies.ranker.fallbacks == 1

    run(scenario())


def test_a_late_model_falls_back_to_the_rule(world, in_process, run):
    _fallback_case(world, in_process, run, model(world, deadline_ms=0.000001), "late")


def test_a_broken_model_file_falls_back_to_the_rule(world, in_process, run, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    _fallback_case(world, in_process, run, model(world, path=str(bad)), "cannot load")


def test_a_model_that_fails_when_run_falls_back_to_the_rule(world, in_process, run, tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    w = numpy_helper.from_array(np.ones((3, 1), dtype=np.float32), "w")        # 3 features, not 11
    g = helper.make_graph([helper.make_node("MatMul", ["features", "w"], ["score"])], "wrong",
                          [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "wrong.onnx"
    onnx.save(m, str(path))
    _fallback_case(world, in_process, run, model(world, path=str(path)), "failed")


def test_no_onnxruntime_falls_back_with_a_clear_log_line(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)          # import onnxruntime -> ImportError
    with caplog.at_level(logging.WARNING, logger="capwarden.engine"):
        r = Ranker()
    assert "onnxruntime is not installed" in caplog.text and "capwarden[model]" in caplog.text
    scores, why = r.rank([features(1, True, False, False, 0, "camera", 0, 0, "execute")])
    assert scores is None and "onnxruntime" in why and r.fallbacks == 1


def test_the_shipped_model_scores_by_the_documented_features():
    r = Ranker()
    assert r.absent is None and os.path.basename(r.path) == ranker.MODEL_FILE
    assert len(features(0, False, False, False, 0, "other", 0, 0, "read")) == len(FEATURES)
    calm = features(5, True, False, False, 10, "camera", 0, 0, "execute")
    stuck = features(5, True, True, False, 10, "camera", 0, 0, "execute")
    urgent = features(9, False, False, False, 0, "camera", 0, 0, "execute")
    thrash = features(9, False, False, False, 0, "camera", 5, 0, "execute")
    (s_calm, s_stuck, s_urgent, s_thrash), why = Ranker(deadline_ms=50).rank([calm, stuck, urgent, thrash])
    assert why == "" and s_stuck < s_calm < s_urgent and s_thrash < s_urgent


def test_the_training_script_reproduces_the_shipped_model(tmp_path):
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "m.onnx"
    subprocess.run([sys.executable, os.path.join(root, "tools", "train_handover_model.py"), "--out", str(out)],
                   check=True, capture_output=True)
    with open(Ranker().path, "rb") as f:
        assert out.read_bytes() == f.read()


def test_the_deadline_stops_a_slow_model_mid_run(tmp_path):
    import time

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # features [n, 11] -> a chain of 40 products of a 400x400 matrix, then back to [n, 1].
    k = 400
    inits = [numpy_helper.from_array(np.full((11, k), 0.01, dtype=np.float32), "w_in"),
             numpy_helper.from_array(np.full((k, k), 0.001, dtype=np.float32), "w_mid"),
             numpy_helper.from_array(np.full((k, 1), 0.01, dtype=np.float32), "w_out")]
    # A k x k block made from the input (so the optimizer cannot fold the chain away at load).
    nodes = [helper.make_node("MatMul", ["features", "w_in"], ["h0"]),
             helper.make_node("Transpose", ["h0"], ["t0"]),
             helper.make_node("MatMul", ["t0", "h0"], ["m0"])]
    for i in range(40):
        nodes.append(helper.make_node("MatMul", ["m%d" % i, "w_mid"], ["m%d" % (i + 1)]))
    nodes += [helper.make_node("ReduceSum", ["m40"], ["s"], keepdims=0),
              helper.make_node("MatMul", ["h0", "w_out"], ["o"]),
              helper.make_node("Add", ["o", "s"], ["score"])]
    g = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 11])],
                          [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = str(tmp_path / "slow.onnx")
    onnx.save(m, path)
    rows = [features(1, True, False, False, 0, "camera", 0, 0, "execute")] * 2
    patient = Ranker(path, deadline_ms=60000)
    t0 = time.perf_counter()
    scores, why = patient.rank(rows)
    full = time.perf_counter() - t0
    assert why == "" and len(scores) == 2
    hurried = Ranker(path, deadline_ms=1)
    t0 = time.perf_counter()
    scores, why = hurried.rank(rows)
    cut = time.perf_counter() - t0
    assert scores is None and why.startswith("late") and hurried.fallbacks == 1
    assert cut < full / 2, (cut, full)          # stopped mid-run, not waited out (same model, same run)
    patient.close()
    hurried.close()
