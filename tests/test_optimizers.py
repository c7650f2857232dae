"""Every optimizer option builds from its YAML and compiles a real DSPy program (DummyLM)."""

from __future__ import annotations

import dspy
import pytest
from hydra.utils import instantiate

from runner.job.evaluation import evaluate
from runner.job.usage import UsageMeter

OPTIMIZERS = ["none", "labeled_fewshot", "bootstrap_fewshot", "bootstrap_random_search", "mipro_v2",
              "gepa", "copro", "simba", "knn_fewshot"]


def _examples(n, offset=0):
    return [dspy.Example(question=f"Tom has {i + offset} apples and gets {42 - i - offset} more. How many?",
                         answer=42.0, solution="They add up to 42.").with_inputs("question") for i in range(n)]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_compiles(compose, name):
    cfg = compose([f"optimizer={name}", "model=scripted", "task=gsm8k"])
    lm = instantiate(cfg.model)
    program = instantiate(cfg.program)
    metric = instantiate(cfg.metric)
    factory = instantiate(cfg.optimizer.init)
    trainset, valset = _examples(8), _examples(4, offset=10)
    meter = UsageMeter()
    compile_kwargs = dict(instantiate(cfg.optimizer.compile))
    if cfg.optimizer.valset:
        compile_kwargs["valset"] = valset
    with dspy.context(lm=lm, callbacks=[meter]):
        optimizer = factory()
        compiled = optimizer.compile(program.deepcopy(), trainset=trainset, **compile_kwargs)
        result = evaluate(compiled, valset, metric, meter, title="t", num_threads=1, max_errors=10)

    assert isinstance(compiled, dspy.Module)
    assert [n for n, _ in compiled.named_predictors()] == [n for n, _ in program.named_predictors()]
    assert {k: result[k] for k in ("score", "n", "failed")} == {"score": 1.0, "n": 4, "failed": 0}
    assert [r["score"] for r in result["rows"]] == [1.0] * 4 and all(r["feedback"] for r in result["rows"])
    demos = compiled.predictors()[0].demos
    if name == "none":
        assert demos == [] and compiled is not program
    if name == "labeled_fewshot":
        assert len(demos) == cfg.optimizer.init.k
    if name == "bootstrap_fewshot":
        assert any(d.get("augmented") for d in demos), "a passing trace should have been bootstrapped"
    if name == "knn_fewshot":  # demos are picked per input at call time, from the trainset
        prompt = str(lm.history[-1]["messages"])
        assert any(ex.question in prompt for ex in trainset)
    if name != "none" and name != "labeled_fewshot":
        assert meter.snapshot().lm_calls > 4, "compiling should have called the LM"


def test_gepa_gets_feedback_metric_and_one_budget(compose):
    cfg = compose(["optimizer=gepa", "model=scripted", "task=gsm8k"])
    budgets = [k for k in ("auto", "max_full_evals", "max_metric_calls") if cfg.optimizer.init.get(k) is not None]
    assert budgets == ["max_metric_calls"]
    gepa = instantiate(cfg.optimizer.init)()
    out = gepa.metric_fn(_examples(1)[0], dspy.Prediction(answer=41.0), None, None, None)
    assert out.score == 0.0 and "42" in out.feedback  # the task metric itself, with its feedback
    assert isinstance(gepa.reflection_lm, dspy.BaseLM)  # built from reflection_model (default: the model group)


@pytest.mark.parametrize("name", ["bootstrap_fewshot", "mipro_v2", "copro", "simba", "bootstrap_random_search"])
def test_threshold_optimizers_get_a_scalar_metric(compose, name):
    cfg = compose([f"optimizer={name}", "model=scripted", "task=gsm8k"])
    with dspy.context(lm=instantiate(cfg.model)):
        optimizer = instantiate(cfg.optimizer.init)()
    assert optimizer.metric(_examples(1)[0], dspy.Prediction(answer=42.0)) == 1.0


@pytest.mark.parametrize("name, selects_on_dev", [("gepa", True), ("mipro_v2", True), ("bootstrap_random_search", True),
                                                  ("bootstrap_fewshot", False), ("copro", False), ("none", False)])
def test_optimizers_that_select_on_dev_get_it_and_turn_on_test_scoring(compose, name, selects_on_dev):
    cfg = compose([f"optimizer={name}", "model=scripted", "task=gsm8k"])
    assert cfg.optimizer.valset is selects_on_dev and cfg.eval.test is selects_on_dev


def test_teacher_models_come_from_reflection_model(compose):
    cfg = compose(["optimizer=gepa", "reflection_model=litellm", "reflection_model.model=openai/gpt-4.1-mini"])
    assert cfg.optimizer.init.reflection_lm.model == "openai/gpt-4.1-mini"
    assert cfg.model._target_ == "runner.lm.build.auto_lm"  # the student stays the embedded model
    cfg = compose(["optimizer=mipro_v2"])
    assert cfg.optimizer.init.prompt_model == cfg.model  # default: the student's model
    cfg = compose(["metric=llm_judge", "reflection_model=local", "reflection_model.model=llamacpp/big.gguf"])
    assert cfg.metric.judge_lm.model == "llamacpp/big.gguf"
