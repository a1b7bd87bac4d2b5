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
    rows = bench.run(batch=2, reps=0, conv_shapes=((2, 4),), tiny=False, num_priors=40, num_classes=2)
    assert [r[0].split()[0] for r in rows] == ["iou", "match_batch", "its", "mining", "detect", "conv"]
    assert all(cpu > 0 and gpu > 0 for _, cpu, gpu in rows)


def test_cuda_bench_finds_the_tiny_models_convs():
    model, convs = bench.tiny_model_convs(batch=32)
    assert len(convs) >= 5 and all(shape[0] == 32 for _, shape in convs)
    assert "forward" not in vars(convs[0][0])  # the recording wrapper is gone again
    x = np.zeros((2, 3, model.config.input_size, model.config.input_size), np.float32)
    assert model.forward(x)[0].shape[1] == model.num_priors  # the model still works


@pytest.mark.slow
def test_cuda_bench_training_step_row_runs(capsys):
    # The whole-step row on test_cuda_step's very small SSD (the tiny-voc model would take the
    # simulator many minutes): both steps run, and the table prints the ratio and the goal.
    import test_cuda_step
    rows = bench.training_step_rows(np.random.default_rng(0), batch=1, reps=0, config=test_cuda_step.TINY,
                                    num_classes=2)
    assert rows[0][0] == "tiny: whole training step x1" and rows[0][1] > 0 and rows[0][2] > 0
    assert [r[0].split(": ")[1] for r in rows[1:]] == ["match", "forward", "loss", "backward", "optimizer"]
    bench.print_table(rows, "simulator")
    assert "the issue's goal, a tiny-voc training step >= 20x faster on the GPU" in capsys.readouterr().out
