"""Stage 10's recipes (v2v_core.toy.attend.RECIPES, `--stage attend-recipe`): runs in order through the training
command, resumed by run, and a recipe's folder committed part-way as a resume point (training/attend-NAME)."""
import pytest


def attend_resume_points() -> list:
    """The committed resume points of stage 10's recipes (v2v_core.toy.attend.resume_point)."""
    from v2v_core.toy import attend
    return sorted(p for p in attend.RESUME_DIR.glob("attend-*") if (p / "training.json").exists())


def test_attend_recipe_runs_what_the_folder_has_not_had_in_order_and_resumes(tmp_path, monkeypatch):
    """--stage attend-recipe: each run of the recipe goes through the training command as stage attend, with the base
    switches first and the run's own after them (so they win), and is recorded in training.json as it ends; a second
    call runs nothing, and a folder that has had only the first run gets only the second."""
    import json
    from types import SimpleNamespace

    from v2v_core.toy import attend, train

    (tmp_path / "training.json").write_text(json.dumps({"seed": 0}))
    calls = []

    def fake_main(argv):
        calls.append(argv)
        info = json.loads((tmp_path / "training.json").read_text())
        (tmp_path / "training.json").write_text(json.dumps({**info, "attend_steps": info.get("attend_steps", 0) + 1}))

    fake = SimpleNamespace(main=fake_main, training_info=train.training_info, record_training=train.record_training)
    recipe = (("a", ("--attend-steps", "7")), ("b", ("--snow-cover", "0.3")))
    assert attend.run_recipe(tmp_path, 1, fake, recipe, ("--snow-cover", "0.5")) == ["a", "b"]
    assert calls[0][:6] == ["--stage", "attend", "--out", str(tmp_path), "--threads", "1"]
    assert calls[0][6:] == ["--snow-cover", "0.5", "--attend-steps", "7"] and calls[1][6:] == ["--snow-cover", "0.5", "--snow-cover", "0.3"]
    info = json.loads((tmp_path / "training.json").read_text())
    assert info["attend_recipe_done"] == ["a", "b"] and info["attend_steps"] == 2 and info["seed"] == 0
    assert set(info["attend_recipe_minutes"]) == {"a", "b"}
    assert attend.run_recipe(tmp_path, 1, fake, recipe, ()) == [] and len(calls) == 2
    info["attend_recipe_done"] = ["a"]
    (tmp_path / "training.json").write_text(json.dumps(info))
    assert attend.run_recipe(tmp_path, 1, fake, recipe, ()) == ["b"] and calls[2][6:] == ["--snow-cover", "0.3"]

    # The training command's stage hands its folder, threads and the recipe asked for (default attend.RECIPE) to run_recipe.
    seen = []
    monkeypatch.setattr(attend, "run_recipe", lambda out, threads, stages, recipe: seen.append((out, threads, recipe)) or [])
    monkeypatch.setattr(train, "image_pool", lambda seed: [])
    train.main(["--stage", "attend-recipe", "--out", str(tmp_path), "--threads", "1"])
    train.main(["--stage", "attend-recipe", "--recipe", "warm", "--out", str(tmp_path), "--threads", "1"])
    assert seen == [(tmp_path, 1, attend.RECIPES[attend.RECIPE]), (tmp_path, 1, attend.RECIPES["warm"])]


def test_resume_point_is_put_into_a_fresh_copy_and_the_recipe_runs_only_what_follows_it(tmp_path, monkeypatch):
    """--resume-point: a committed point that has had runs a and b of a recipe goes into a fresh folder (its UNet, text
    encoder and training.json replace the folder's, the rest stays), the recipe then runs only c; a folder already
    further along keeps its own; a folder of another lineage, or a point that is not there, stops with a message."""
    import json
    from types import SimpleNamespace

    from v2v_core.toy import attend, train

    point, out = tmp_path / "point", tmp_path / "out"
    for folder, tag in ((point, "point"), (out, "v3.4")):
        for part in ("unet", "text_encoder", "vae"):
            (folder / part).mkdir(parents=True)
            (folder / part / "w").write_text(tag)
    (point / "training.json").write_text(json.dumps({"attend_recipe_done": ["a", "b"], "attend_steps": 2}))
    (out / "training.json").write_text(json.dumps({"seed": 0}))
    assert attend.start_from_resume_point(out, point, train) == ["a", "b"]
    assert [(out / p / "w").read_text() for p in ("unet", "text_encoder", "vae")] == ["point", "point", "v3.4"]

    calls = []
    fake = SimpleNamespace(main=calls.append, training_info=train.training_info, record_training=train.record_training)
    recipe = (("a", ()), ("b", ()), ("c", ("--attend-steps", "5")))
    assert attend.run_recipe(out, 1, fake, recipe, ()) == ["c"] and calls[0][6:] == ["--attend-steps", "5"]
    (point / "unet" / "w").write_text("older")
    assert attend.start_from_resume_point(out, point, train) == ["a", "b", "c"] and (out / "unet" / "w").read_text() == "point"
    (out / "training.json").write_text(json.dumps({"attend_recipe_done": ["x"]}))
    with pytest.raises(SystemExit, match="not one recipe"):
        attend.start_from_resume_point(out, point, train)
    with pytest.raises(SystemExit, match="no resume point committed"):
        attend.start_from_resume_point(out, tmp_path / "none", train)

    # The training command puts the recipe's own point (training/attend-RECIPE) in before running the recipe.
    seen = []
    monkeypatch.setattr(attend, "start_from_resume_point", lambda o, p, stages: seen.append((o, p)))
    monkeypatch.setattr(attend, "run_recipe", lambda *a: [])
    monkeypatch.setattr(train, "image_pool", lambda seed: [])
    train.main(["--stage", "attend-recipe", "--resume-point", "--out", str(out), "--threads", "1"])
    assert seen == [(out, attend.resume_point(attend.RECIPE, train))]

    # A recipe without a point of its own resumes from the point furthest along whose runs begin it (heads: scratch's).
    monkeypatch.setattr(attend, "RESUME_DIR", tmp_path / "points")
    monkeypatch.setattr(attend, "RECIPES", {"x": recipe, "y": (*recipe, ("d", ())), "z": (("q", ()),)})
    for name, done in (("x", ["a"]), ("w", ["a", "b"]), ("v", ["q", "a"])):
        (tmp_path / "points" / f"attend-{name}").mkdir(parents=True)
        (tmp_path / "points" / f"attend-{name}" / "training.json").write_text(json.dumps({"attend_recipe_done": done}))
    assert [attend.resume_point(r, train).name for r in ("x", "y", "z")] == ["attend-x", "attend-w", "attend-z"]
    assert not (attend.resume_point("z", train) / "training.json").exists()


@pytest.mark.skipif(not attend_resume_points(), reason="no committed resume point")
def test_committed_resume_points_are_part_way_through_their_recipe_with_the_layout():
    """Each committed resume point (training/attend-NAME) has had a first part of its recipe, in order (after the runs of
    the folder its recipe continues, if any), and its UNet has stage 10's layout (a transformer block in every block), so
    --resume-point can continue it."""
    import json

    from v2v_core.toy import attend
    from v2v_core.toy.arch import has_everywhere_layout

    for point in attend_resume_points():
        names = [n for n, _ in attend.RECIPES[point.name.removeprefix("attend-")]]
        done = json.loads((point / "training.json").read_text())["attend_recipe_done"]
        mine = [n for n in done if n in names]          # a recipe may continue another's folder
        assert 0 < len(mine) <= len(names) and mine == names[:len(mine)] and done[len(done) - len(mine):] == mine
        assert has_everywhere_layout(json.loads((point / "unet" / "config.json").read_text()))
