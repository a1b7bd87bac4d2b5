"""python -m minissd.bench cuda: refuses to time the simulator; its code runs (tiny sizes)."""

import numpy as np
import pytest

import minissd.cuda as mc

from minissd.bench import cuda as bench  # noqa: E402


def test_cuda_bench_refuses_to_time_the_simulator(capsys):
    if not mc.simulating():
        pytest.skip("a real GPU: the benchmark would run for minutes")
    assert bench.main([]) == 2
    assert "simulator" in capsys.readouterr().err


@pytest.mark.slow
def test_cuda_bench_rows_run_on_tiny_sizes():
    # Not a timing (the simulator's times mean nothing): a check that every row's code runs,
    # since the machine that writes it may have no GPU.
    result = bench.run(batch=2, reps=0, conv_shapes=((2, 4),), tiny=False, num_priors=40, num_classes=2)
    names = [r[0].split()[0] for r in result["rows"]]
    assert names == ["iou", "match_batch", "its", "mining", "on", "detect", "on", "conv"]
    assert all(cpu > 0 and gpu > 0 for _, cpu, gpu in result["rows"])


def test_cuda_bench_finds_the_tiny_models_convs():
    model, convs = bench.tiny_model_convs(batch=32)
    assert len(convs) >= 5 and all(shape[0] == 32 for _, shape in convs)
    assert "forward" not in vars(convs[0][0])  # the recording wrapper is gone again
    x = np.zeros((2, 3, model.config.input_size, model.config.input_size), np.float32)
    assert model.forward(x)[0].shape[1] == model.num_priors  # the model still works


@pytest.mark.slow
def test_cuda_bench_training_step_rows_and_kernel_table(tmp_path, capsys):
    # The whole-step rows on test_cuda_step's very small SSD (the tiny-voc model would take the
    # simulator many minutes): both steps run, every kernel of the GPU step is timed, and the
    # table prints images/s, the ratio and the goal, as text and as Markdown.
    import test_cuda_step
    kernels = {}
    rows = bench.training_step_rows(np.random.default_rng(0), batch=2, reps=0, config=test_cuda_step.TINY,
                                    num_classes=2, cpu_processes=1, kernels=kernels)
    assert rows[0][0] == "tiny: whole training step x2 (CPU: 1 process)" and rows[0][1] > 0 and rows[0][2] > 0
    assert [r[0].split(": ")[1] for r in rows[1:]] == ["match", "forward", "loss", "backward", "optimizer"]
    assert {"_match_one_kernel", "gather_cols_kernel", "batchnorm_forward_kernel", "_mine_kernel",
            "sgd_update_kernel"} <= set(kernels)
    assert all(n >= 1 and seconds > 0 for n, seconds in kernels.values())
    assert kernels["sgd_update_kernel"][0] == 1  # one launch over every parameter
    result = {"rows": rows, "batch": 2, "kernels": kernels}
    bench.print_table(result, "simulator")
    out = capsys.readouterr().out
    assert "whole training step at batch 2: CPU" in out and "images/s" in out and "(the issue's goal, >= 20x" in out
    bench.write_markdown(tmp_path / "cuda.md", result, "simulator")
    md = (tmp_path / "cuda.md").read_text()
    assert "| row | CPU ms | GPU ms | speed-up |" in md and "| `_match_one_kernel` | 1 |" in md
    # the kernels are themselves again afterwards
    from minissd.cuda import matching
    assert not isinstance(matching._match_one_kernel, bench._TimedKernel)
