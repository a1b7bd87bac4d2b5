"""python -m minissd.bench data runs end to end on a few generated photos (a smoke test: the
figures themselves are measured by hand, docs/own-data.md)."""

from minissd.bench import data


def test_bench_data_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINISSD_DATA", str(tmp_path))
    assert data.main(["--images", "6", "--batch-size", "2", "--steps", "1", "--rounds", "1",
                      "--input-size", "64", "--workers", "1", "--only", "1,2,5"]) == 0
    out = capsys.readouterr().out
    assert "waiting" in out and "1 threads, decoded once at 64 px" in out and "augment from the 64 px image" in out



def test_the_defaults_have_enough_images():
    # the default run must not stop at its own check (96 photos for 4 batches of 32 did)
    args = data.parser().parse_args([])
    assert args.images >= args.batch_size * (args.steps + 1)
