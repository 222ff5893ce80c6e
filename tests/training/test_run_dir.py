import multiprocessing

from cifar_scratch.training.run_dir import create_run_dir


def test_same_second_gets_distinct_folders(tmp_path):
    now = 1_800_000_000.0
    made = [create_run_dir(tmp_path, "sweep", now=now) for _ in range(3)]
    assert len(set(made)) == 3
    assert [p.name.split("_", 1)[1] for p in made] == ["sweep", "sweep-2", "sweep-3"]
    assert all((p / "checkpoints").is_dir() and (p / "plots").is_dir() for p in made)


def _make(args):
    return str(create_run_dir(*args))


def test_parallel_processes_never_share_a_folder(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        made = pool.map(_make, [(tmp_path, "par", 1_800_000_000.0)] * 8)
    assert len(set(made)) == 8
