"""A prior trained in stages: `init_from` (a run's checkpoint or exported folder) and
tools/export_prior.py (a running run's checkpoint as a folder), on the v2 recipe at tiny settings."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diffexpand.models import load_sd_components
from diffexpand.models.identity import CorruptModelFileError
from diffexpand.models.tiny import TinySDConfig
from lightning_modules.prior import TinyPriorTrainer
from tools.export_prior import export_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs/prior-v2.yaml")


def _tiny(root: Path) -> list[str]:
    return ["--trainer.logger=false", "--trainer.callbacks=null", "--trainer.limit_val_batches=1",
            "--trainer.val_check_interval=2", "--data.init_args.batch_size=8",
            "--trainer.enable_checkpointing=false", f"--trainer.default_root_dir={root}"]  # fmt: skip


@pytest.fixture(scope="module")
def epsilon_run(tmp_path_factory):
    """Stage 1 with epsilon prediction, 2 VAE + 2 UNet steps: its export folder, and a checkpoint saved
    before the run's end (whose raw weights differ from its EMA weights)."""
    import train

    root = tmp_path_factory.mktemp("epsilon-run")
    saved = {}

    class SaveBeforeTheEnd:  # the state a ModelCheckpoint of a running run holds
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 4:
                trainer.save_checkpoint(root / "running.ckpt")
                saved["vae"] = {k: v.clone() for k, v in trainer.lightning_module.vae.state_dict().items()}

    from lightning.pytorch import Callback

    callback = type("SaveBeforeTheEnd", (SaveBeforeTheEnd, Callback), {})()
    cli = train.cli_main(
        ["--config", CONFIG, *_tiny(root), "--trainer.max_steps=4",
         "--model.init_args.stack.prediction_type=epsilon",
         "--model.init_args.vae_steps=2", "--model.init_args.unet_steps=2",
         f"--model.init_args.output_dir={root / 'eps'}"],
        run=False,
    )  # fmt: skip
    cli.trainer.callbacks.append(callback)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    stack = TinySDConfig(**dict(cli.model.hparams.stack))  # the parsed config holds it as a dict
    return {"root": root, "stack": stack, "latent_scale": float(cli.model.latent_scale), **saved}


def test_a_checkpoint_starts_a_v_prediction_run_with_the_vae_kept_and_a_fresh_ema(epsilon_run, tmp_path):
    import train

    out = tmp_path / "v"
    stage2 = train.cli_main([
        "fit", "--config", CONFIG, *_tiny(tmp_path), "--trainer.max_steps=1",
        "--model.init_args.vae_steps=0", "--model.init_args.unet_steps=1",
        f"--model.init_args.init_from={epsilon_run['root'] / 'running.ckpt'}",
        f"--model.init_args.output_dir={out}",
    ])  # fmt: skip
    module = stage2.model
    assert all(torch.equal(module.vae.state_dict()[k], v) for k, v in epsilon_run["vae"].items())
    assert float(module.latent_scale) == epsilon_run["latent_scale"] > 0
    assert int(module.ema_unet.n_averaged) == 1  # restarted (the checkpoint's had 2 updates)
    assert load_sd_components(epsilon_run["root"] / "eps").scheduler.config.prediction_type == "epsilon"
    assert load_sd_components(out).scheduler.config.prediction_type == "v_prediction"
    info = json.loads((out / "training_info.json").read_text())
    assert info["initialised_from"] == str(epsilon_run["root"] / "running.ckpt")
    assert info["prediction_type"] == "v_prediction"

    # a VAE that trains again measures its latent scale again
    assert float(TinyPriorTrainer(stack=epsilon_run["stack"], init_from=str(out)).latent_scale) == 0


def test_an_exported_folder_starts_a_run_with_its_weights_scale_and_wall_time(epsilon_run):
    folder = epsilon_run["root"] / "eps"
    module = TinyPriorTrainer(stack=epsilon_run["stack"], vae_steps=0, init_from=str(folder))
    exported = load_sd_components(folder)  # EMA weights, saved in float16
    for name in ("vae", "unet", "text_encoder"):
        got, want = getattr(module, name).state_dict(), getattr(exported, name).state_dict()
        assert all(torch.equal(got[k], want[k].float()) for k in want), name
    assert float(module.latent_scale) == exported.vae.config.scaling_factor > 0
    info = json.loads((folder / "training_info.json").read_text())
    assert float(module.train_seconds) == info["train_seconds"] > 0

    # the prior v1 recorded its time under other names: a wall time of 0, not an error
    del info["train_seconds"]
    info |= {"train_seconds_unet_stage": 3650.2, "train_seconds_vae_stage_from_log": 2261}
    v1_style = Path(shutil.copytree(folder, folder.parent / "v1-style"))
    (v1_style / "training_info.json").write_text(json.dumps(info))
    v1 = TinyPriorTrainer(stack=epsilon_run["stack"], vae_steps=0, init_from=str(v1_style))
    assert float(v1.train_seconds) == 0 and float(v1.latent_scale) == float(module.latent_scale)


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_a_folder_of_another_stack_or_with_bad_records_is_refused(epsilon_run, tmp_path):
    stack, folder = epsilon_run["stack"], _copy(epsilon_run["root"] / "eps", tmp_path)
    with pytest.raises(ValueError, match="trained with another stack.*same stack sizes"):
        TinyPriorTrainer(init_from=str(epsilon_run["root"] / "running.ckpt"))  # v1 sizes, v2 checkpoint
    with pytest.raises(ValueError, match="another stack.*unet.attention_head_dim: 2 there, 8 here"):
        TinyPriorTrainer(
            stack=TinySDConfig(**(vars(stack) | {"unet_attention_head_dim": 8})), init_from=str(folder)
        )
    with pytest.raises(FileNotFoundError, match="no model_index.json: not an exported prior folder"):
        TinyPriorTrainer(stack=stack, init_from=str(tmp_path))
    for record, problem in (('{"train_seconds": "an hour"}', "train_seconds is 'an hour'"),
                            ('{"train_seconds": true}', "train_seconds is True"),
                            ('[1, 2]', "not a JSON object")):  # fmt: skip
        (folder / "training_info.json").write_text(record)
        with pytest.raises(CorruptModelFileError, match=f"training_info.json cannot be read: {problem}"):
            TinyPriorTrainer(stack=stack, init_from=str(folder))
    (folder / "training_info.json").unlink()
    config = json.loads((folder / "vae/config.json").read_text())
    (folder / "vae/config.json").write_text(json.dumps(config | {"scaling_factor": -1.0}))
    with pytest.raises(CorruptModelFileError, match="config.json cannot be read: scaling_factor is -1.0"):
        TinyPriorTrainer(stack=stack, init_from=str(folder))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptModelFileError, match="junk.ckpt cannot be read.*give init_from the last.ckpt"):
        TinyPriorTrainer(init_from=str(tmp_path / "junk.ckpt"))


def test_init_parts_starts_a_wider_unet_fresh_beside_a_smaller_priors_vae_and_text_encoder(epsilon_run):
    stack, root = epsilon_run["stack"], epsilon_run["root"]
    wider = TinySDConfig(**(vars(stack) | {"unet_channels": [c * 2 for c in stack.unet_channels]}))
    with pytest.raises(ValueError, match=r"another stack.*or load only the parts that match \(init_parts"):
        TinyPriorTrainer(stack=wider, vae_steps=0, init_from=str(root / "eps"))
    exported = load_sd_components(root / "eps")
    saved = torch.load(root / "running.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    lent = ("vae", "text_encoder")
    weights = {  # what each source holds for the two parts it lends (an export: the EMA weights)
        root / "eps": {f"{n}.{k}": v for n in lent for k, v in getattr(exported, n).state_dict().items()},
        root / "running.ckpt": {k: v for k, v in saved.items() if k.split(".")[0] in lent},
    }
    for source, want in weights.items():
        module = TinyPriorTrainer(
            stack=wider, vae_steps=0, init_from=str(source), init_parts=["vae", "text_encoder"]
        )
        got = module.state_dict()
        assert all(torch.equal(got[k], v.float()) for k, v in want.items()), source
        unet_in = module.unet.state_dict()["conv_in.weight"]
        assert unet_in.shape[0] == 2 * exported.unet.state_dict()["conv_in.weight"].shape[0]  # its own UNet
        assert float(module.latent_scale) == pytest.approx(epsilon_run["latent_scale"], rel=1e-3)
        assert int(module.ema_text_encoder.n_averaged) == 0  # the EMA restarts from the loaded weights


def test_init_parts_is_refused_where_it_cannot_mean_anything(epsilon_run):
    stack, folder = epsilon_run["stack"], str(epsilon_run["root"] / "eps")
    with pytest.raises(ValueError, match="init_parts says which parts init_from loads: give init_from"):
        TinyPriorTrainer(stack=stack, init_parts=["vae"])
    for parts in (["vae", "clip"], [], ["vae", "vae"]):
        with pytest.raises(ValueError, match=r"must name each of \['vae', 'unet', 'text_encoder'\] at most"):
            TinyPriorTrainer(stack=stack, vae_steps=0, init_from=folder, init_parts=parts)
    with pytest.raises(ValueError, match="leaves the VAE untrained: load it .* or train it"):
        TinyPriorTrainer(stack=stack, vae_steps=0, init_from=folder, init_parts=["unet", "text_encoder"])
    module = TinyPriorTrainer(stack=stack, vae_steps=2, init_from=folder, init_parts=["unet", "text_encoder"])
    assert float(module.latent_scale) == 0  # the VAE trains again: its scale is measured again
    exported = load_sd_components(folder)
    for name, loaded in (("vae", False), ("unet", True)):
        got, want = getattr(module, name).state_dict(), getattr(exported, name).state_dict()
        assert all(torch.equal(got[k], want[k].float()) for k in want) == loaded, name


def test_export_prior_writes_the_ema_weights_of_a_running_runs_checkpoint(epsilon_run, tmp_path):
    root = epsilon_run["root"]
    saved = torch.load(root / "running.ckpt", map_location="cpu", weights_only=True)
    raw, ema = (
        saved["state_dict"]["unet.conv_in.weight"],
        saved["state_dict"]["ema_unet.module.conv_in.weight"],
    )
    assert not torch.equal(raw, ema)  # so exporting the raw weights would be caught
    folder = export_checkpoint(root / "running.ckpt", tmp_path / "exported")
    again, end = load_sd_components(folder), load_sd_components(root / "eps")  # the run's own end export
    for name in ("vae", "unet", "text_encoder"):
        got, want = getattr(again, name).state_dict(), getattr(end, name).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert json.loads((folder / "captioner.json").read_text()) == json.loads(
        (root / "eps/captioner.json").read_text()
    )
    info, end_info = (json.loads((f / "training_info.json").read_text()) for f in (folder, root / "eps"))
    assert 0 < info.pop("train_seconds") <= end_info.pop("train_seconds")  # saved before the last batch ended
    assert info == end_info


def test_export_prior_refuses_what_it_cannot_export(epsilon_run, tmp_path):
    saved = torch.load(epsilon_run["root"] / "running.ckpt", map_location="cpu", weights_only=True)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptModelFileError, match="junk.ckpt cannot be read.*export another checkpoint"):
        export_checkpoint(tmp_path / "junk.ckpt", tmp_path / "nowhere")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt is not a checkpoint of the prior trainer"):
        export_checkpoint(tmp_path / "other.ckpt", tmp_path / "nowhere")
    torch.save(
        saved | {"hyper_parameters": saved["hyper_parameters"] | {"bogus": 1}}, tmp_path / "newer.ckpt"
    )
    with pytest.raises(ValueError, match=r"newer.ckpt: settings this version .* does not know: \['bogus'\]"):
        export_checkpoint(tmp_path / "newer.ckpt", tmp_path / "nowhere")
    state = saved["state_dict"] | {"ema_unet.n_averaged": torch.tensor(0)}
    torch.save(saved | {"state_dict": state}, tmp_path / "vae-stage.ckpt")
    with pytest.raises(ValueError, match="vae-stage.ckpt was saved before the first UNet step"):
        export_checkpoint(tmp_path / "vae-stage.ckpt", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def _idx(path: Path, array: np.ndarray) -> None:
    """An idx file (uint8) as Fashion-MNIST ships them."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_export_prior_reads_no_data_where_the_checkpoint_points_and_checks_its_counts(epsilon_run, tmp_path):
    """A checkpoint names the data root its run read; the export fits the captioner on the data it finds
    itself (or --data-root), not wherever a handed-over checkpoint points, and refuses counts that are
    not counts."""
    saved = torch.load(epsilon_run["root"] / "running.ckpt", map_location="cpu", weights_only=True)
    data = saved["datamodule_hyper_parameters"]
    assert data["caption"] == "attributes"  # the run this checks has a captioner to fit
    planted = tmp_path / "planted"  # a tiny dataset of black images: thresholds of 0 everywhere
    planted.mkdir()
    labels = np.arange(40) % 10
    for split, n in (("train", 40), ("t10k", 40)):
        _idx(planted / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)))
        _idx(planted / f"{split}-labels-idx1-ubyte", labels[:n])
    torch.save(saved | {"datamodule_hyper_parameters": data | {"root": str(planted)}}, tmp_path / "p.ckpt")
    folder = export_checkpoint(tmp_path / "p.ckpt", tmp_path / "exported")
    own = json.loads((epsilon_run["root"] / "eps/captioner.json").read_text())
    assert json.loads((folder / "captioner.json").read_text()) == own  # not the planted data's

    for name, value, problem in (
        ("image_size", 10**5, "the data's image_size is 100000, not a whole number between 8 and 512"),
        ("image_size", "32", "the data's image_size is '32', not a whole number"),
    ):
        torch.save(saved | {"datamodule_hyper_parameters": data | {name: value}}, tmp_path / "bad.ckpt")
        with pytest.raises(ValueError, match=f"bad.ckpt: {problem}"):
            export_checkpoint(tmp_path / "bad.ckpt", tmp_path / "nowhere")
    torch.save(saved | {"global_step": "many"}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="bad.ckpt: global_step is 'many', not a whole number at least 0"):
        export_checkpoint(tmp_path / "bad.ckpt", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
