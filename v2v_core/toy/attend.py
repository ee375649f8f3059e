"""Stage 10 of the toy's training, attend (the shipped weights' since v4; "all" runs it as the recipe RECIPE): a
transformer block in every UNet block, the latent's full resolution included (arch.attention_everywhere), trained on
stage 9's objective plus a training-only style whose invented detail is shared by similar tokens (styles.psychedelic),
with the auxiliary losses and the built head tried for issue #30 (model card, "Stage 10"). The training command
(`python -m v2v_core.toy.train --stage attend ...`) takes its switches from add_arguments and runs it through run."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from . import batches as _batches
from . import correspondence_loss as _corr
from . import styles as _styles
from .arch import attention_everywhere, everywhere_config, has_everywhere_layout, heads_of, with_full_res_heads
from .batches import CROP, T_MAX, T_MIN, _SdeditBatches
from .correspondence_loss import (SHARED_ATTN_LAYERS, SHARED_ATTN_WEIGHT, SHARED_OUT_LAYERS, SHARED_OUT_WEIGHT,
                                  self_attention_under)
from .shared_head import build_shared_head, fit_readout
from .styles import PSYCHEDELIC, STYLES

# A transformer block in every UNet block, the latent's full resolution included (arch.attention_everywhere, an exact
# warm start), then stage 9's objective with an invented style whose detail is SHARED by similar tokens of the frame
# (styles.psychedelic): the self-attention gets something to carry, as SD's does.
ATTEND_STEPS, ATTEND_LR = 3000, 3e-4
PSYCHEDELIC_WEIGHT = 3.0     # beside stage 8's style weights (train.REFINE_STYLE_WEIGHTS)
# --stem-first (session 21): the choice keyed on the source latents is learnable by the UNet's stem (conv_in, the time
# embedding, the first down block) when it is the only loss, and not under the joint objective, which holds the stem in
# place (benchmarks/shared_choice_learnability.py --unet). So the stem may first learn it alone, read by a linear probe
# on the first full-resolution self-attention's output; the joint stage then keeps it with --shared-out-weight.
STEM_LAYER = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
STEM_LR, STEM_PROBE_LR, STEM_BATCH = 1e-3, 1e-2, 16


# Stage 10's runs as recipes (`--stage attend-recipe --recipe NAME`), each started on a copy of v3.4's folder: a
# recipe's runs in order, each the stage's switches on top of RECIPE_BASE (the last of a repeated switch wins). The
# folder records the runs it has had (training.json's attend_recipe_done), so a stopped recipe resumes at the run it
# was in; a run is written only at its end, so an interrupted one starts again. Sessions 15-24's lineage (a
# from-scratch UNet and some thirty runs, model card) is not reproducible from this repository: its folders lived in
# /tmp and were lost. "warm" (session 25): v3.4's UNet in the layout, its stem first; "scratch" (session 25, the one to
# continue): a fresh UNet of the layout, its stem first, on the final objective from the start (model card; S3-S6,
# session 26: two more runs as S2, then the stream's unrolled second step and commit at half the rate; S7-S10,
# session 27: the commit at the full share changed nothing; the stem trained alone again before a run's joint steps
# moved the choice most, S10 with pixel art drawn more often, the one style still under v3.4's fidelity; S11, session 29:
# the joint steps alone at half S10's rate, "a photo" drawn 3x, for the fidelity S10 had given up; S12, session 30: the
# same at 1.5e-4 with "a photo" drawn 4x, shipped as v4.2).
RECIPE_BASE = ("--latent-kernel", "64", "--psychedelic-weight", "10", "--style-weight", "snowy scene=5",
               "--style-weight", "black and white=6", "--style-weight", "sepia=2.5", "--style-weight", "cartoon=3",
               "--style-weight", "photo=1.5", "--corr-sharpen", "1", "--corr-layers", "down_blocks.1,down_blocks.2,mid_block,up_blocks",
               "--shared-weight", "0", "--shared-out-weight", "2", "--probe-lr", "0.01", "--unroll", "0.5", "--commit", "0.5")
_SNOW = ("--snow-cover", "0.35", "--snow-shade", "0.35")
# The scratch recipe's continued runs: 2000 joint steps at 1e-3 without the stream's terms, then at half the rate with
# RECIPE_BASE's unrolled second step and commit.
_S_JOINT = ("--attend-steps", "2000", "--attend-lr", "1e-3", "--unroll", "0", "--commit", "0", *_SNOW)
_S_STREAM = ("--attend-steps", "2000", "--attend-lr", "5e-4", *_SNOW)
_S_STEM = ("--stem-first", "2500", *_S_STREAM)      # the stem alone first (session 27)
_S12 = ("--attend-steps", "2000", "--attend-lr", "1.5e-4", *_SNOW, "--style-weight", "pixel art=5", "--style-weight", "photo=4")
_LOWRES = ("--shared-out-layers", "down_blocks.0.,up_blocks.2.,mid_block.,up_blocks.0.,up_blocks.1.")
_SCRATCH = (
    ("S1", ("--attend-from-scratch", "--stem-first", "2500", "--attend-steps", "2000", "--unroll", "0", "--commit", "0", *_SNOW)),
    ("S2", _S_JOINT), ("S3", _S_JOINT),
    ("S4", _S_STREAM), ("S5", _S_STREAM), ("S6", _S_STREAM),
    ("S7", (*_S_STREAM, "--commit", "1")),
    ("S8", _S_STEM), ("S9", _S_STEM), ("S10", (*_S_STEM, "--style-weight", "pixel art=5")),
    ("S11", ("--attend-steps", "2000", "--attend-lr", "2.5e-4", *_SNOW, "--style-weight", "pixel art=5", "--style-weight", "photo=3")),
    ("S12", _S12),
)
RECIPES = {
    "warm": (
        ("W1", ("--stem-first", "2500", "--attend-steps", "500", "--attend-lr", "5e-4", "--snow-cover", "0.5", "--snow-shade", "0.5")),
        ("W2", ("--attend-steps", "1000", "--attend-lr", "5e-4", *_SNOW)),
        ("W3", ("--attend-steps", "1000", "--attend-lr", "5e-4", *_SNOW)),
        ("W4", ("--attend-steps", "1000", "--attend-lr", "5e-4", *_SNOW)),
        ("W5", ("--stem-first", "2500", "--attend-steps", "1000", "--attend-lr", "2.5e-4", *_SNOW)),
    ),
    "scratch": _SCRATCH,
    # Session 31 (not shipped): S12's run again with the probes also on the low-resolution decoder's self-attention, where
    # StreamV2V's feature fusion acts and where v4.2 carried none of the choice (model card, session 31).
    # Session 32 (not shipped): L2-L3, the full-resolution self-attention dropped for half the samples (--drop-attention),
    # so that the low-resolution levels would have to carry the choice; they did not (model card, session 32).
    "scratch-lowres": (
        ("L1", (*_S12, *_LOWRES)),
        ("L2", (*_S12, *_LOWRES, "--attend-steps", "400", "--drop-attention", "0.5")),
        ("L3", (*_S12, *_LOWRES, "--attend-steps", "1600", "--attend-lr", "5e-4", "--drop-attention", "0.5")),
    ),
    # Session 32: the full-resolution attention regrouped from 8 heads of 6 channels into one of 48 (--full-res-heads;
    # SD-1.5's heads have 40), its 1024 x 1024 score matrices a quarter of the cost; then S8's stem-first run to learn
    # the choice again in the new heads, and S12's run for fidelity (model card, session 32). The scratch recipe's runs
    # come first, so that a fresh folder runs the whole lineage and a copy of v4.2's runs only H1 and H2; shipped as v4.3.
    "heads": (
        *_SCRATCH,
        ("H1", ("--full-res-heads", "1", *_S_STEM, "--style-weight", "pixel art=5", "--style-weight", "photo=3")),
        ("H2", ("--full-res-heads", "1", *_S12)),
    ),
}
RECIPE = "heads"
# A recipe's folder committed part-way (`--resume-point`): what stage 10 changes in v3.4's folder, its UNet, text
# encoder and training.json (the autoencoder, tokenizer and scheduler stay v3.4's), so that a run on a fresh machine
# continues the recipe instead of re-making hours of it. Nothing loads them but the recipe. training/attend-scratch
# holds S9; the shipped folder (v4.3) has had the whole heads recipe (S1-S12, H1, H2) itself, so a copy of it needs no
# point (session 32's training/attend-heads, byte for byte the shipped UNet and text encoder, was removed on shipping).
RESUME_DIR = Path(__file__).resolve().parents[2] / "training"
RESUME_PARTS = ("unet", "text_encoder", "training.json")


def runs_done(folder, stages) -> list:
    """The recipe runs a folder has had, in order (its training.json's attend_recipe_done; `stages`: the training module)."""
    return stages.training_info(Path(folder)).get("attend_recipe_done", [])


def resume_point(recipe_name: str, stages) -> Path:
    """Where the recipe's committed resume point lives: training/attend-NAME, or, where the recipe has none, the committed
    point furthest along whose runs begin the recipe (the heads recipe begins with the scratch recipe's runs, so it
    resumes from training/attend-scratch); training/attend-NAME, missing, where none does."""
    own = RESUME_DIR / f"attend-{recipe_name}"
    if runs_done(own, stages):
        return own
    names = [name for name, _ in RECIPES[recipe_name]]
    begins = [(len(done), p) for p in sorted(RESUME_DIR.glob("attend-*"))
              if (done := runs_done(p, stages)) and done == names[:len(done)]]
    return max(begins)[1] if begins else own


def start_from_resume_point(out, point, stages) -> list:
    """Put the resume point `point` (RESUME_PARTS) into the folder `out`, a copy of v3.4's, when the point has had more
    of the recipe than `out`; a missing point, or one whose runs and out's are not one recipe's (neither the start of
    the other), stops the run. Returns the runs out has had."""
    if not (Path(point) / "training.json").exists():
        raise SystemExit(f"--resume-point: no resume point committed at {point}; run the recipe without --resume-point.")
    have, theirs = runs_done(out, stages), runs_done(point, stages)
    if theirs[:len(have)] != have[:len(theirs)]:        # one must be the start of the other
        raise SystemExit(f"--resume-point: {point} has had the runs {theirs}, {out} has had {have}: they are not one "
                         f"recipe. Start from a fresh copy of the toy's folder.")
    if len(theirs) > len(have):
        for part in RESUME_PARTS:
            src, dst = Path(point) / part, Path(out) / part
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
    return runs_done(out, stages)


def run_recipe(out, threads: int, stages, recipe, base=RECIPE_BASE) -> list:
    """Run the recipe's runs that the folder `out` has not had, each through the training command (`stages`: the
    training module, as for run) as stage attend, recording each in training.json as it ends. Returns the names run now."""
    ran = []
    for name, switches in recipe:
        if name in runs_done(out, stages):
            continue
        t0 = time.time()
        stages.main(["--stage", "attend", "--out", str(out), "--threads", str(threads), *base, *switches])
        info = stages.training_info(out)
        stages.record_training(out, {
            "attend_recipe_done": info.get("attend_recipe_done", []) + [name],
            "attend_recipe_minutes": {**info.get("attend_recipe_minutes", {}), name: round((time.time() - t0) / 60, 1)}})
        ran.append(name)
    return ran


class _Stop(Exception):
    """Raised by StemProbe's hook: nothing after STEM_LAYER is needed."""


def stem_modules(unet, block_only: bool = False) -> list:
    """What trains to reach STEM_LAYER: the stem (conv_in, the time embedding, the first down block), or with block_only
    that layer's transformer block alone."""
    return [unet.down_blocks[0].attentions[0]] if block_only else [unet.conv_in, unet.time_embedding, unet.down_blocks[0]]


class StemProbe:
    """The UNet run up to STEM_LAYER (a forward hook keeps its output and stops the forward there) and a fresh linear
    probe of that output: call with the UNet's input, timesteps and text states -> (B, N). remove() takes the hook off."""

    def __init__(self, unet):
        self.unet, attn = unet, dict(unet.named_modules())[STEM_LAYER]
        self.probe = torch.nn.Linear(attn.to_out[0].out_features, 1)
        self.out = None
        self.handle = attn.register_forward_hook(self._stop)

    def _stop(self, _m, _i, out):
        self.out = out
        raise _Stop

    def __call__(self, x_in, t, emb) -> torch.Tensor:
        try:
            self.unet(x_in, t, encoder_hidden_states=emb)
        except _Stop:
            pass
        return self.probe(self.out)[..., 0]

    def remove(self):
        self.handle.remove()


def stem_first(pipe, pool, steps: int, seed: int, stages, lr: float = STEM_LR, batch: int = STEM_BATCH) -> float:
    """Train the UNet's stem (stem_modules) for `steps` steps on one loss: a StemProbe against the psychedelic choice
    (stages.shared_choice); everything else stays frozen. Returns the probe's last MSE over the choice's variance
    (1: nothing learnt)."""
    unet, te = pipe.unet, pipe.text_encoder
    stem, head = stem_modules(unet), StemProbe(unet)
    opt = torch.optim.AdamW([{"params": [p for m in stem for p in m.parameters()]},
                             {"params": list(head.probe.parameters()), "lr": STEM_PROBE_LR}], lr=lr)
    data = _SdeditBatches(pipe, pool, seed, {PSYCHEDELIC.name: 1.0}, STYLES + (PSYCHEDELIC,))
    allowed = sorted(set(range(len(pool))) - set(stages.photo_indices(stages.CORR_HOLDOUT)))   # as tune_unet's pairs
    log, rel = [], 1.0
    unet.requires_grad_(False)
    for m in stem:
        m.requires_grad_(True)
    try:
        for _ in range(steps):
            b = data.sample_pairs(batch // 2, CROP, allowed, 0)
            with torch.no_grad():
                emb = te(data.ids[b["pidx"]])[0]
            x_t = b["a"].sqrt() * b["z_cond"] + (1 - b["a"]).sqrt() * b["eps"]   # no in-style share: m is the source's
            choice = stages.shared_choice(b)[1]
            loss = torch.nn.functional.mse_loss(head(torch.cat([x_t, b["z_cond"]], 1), b["t"], emb), choice)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rel = loss.item() / max(choice.var().item(), 1e-8)
            stages._log_every(log, (loss.item(), choice.var().item()), "stem first: probe MSE {:.4f}, choice variance {:.4f}")
    finally:
        head.remove()
        unet.requires_grad_(True)
    return rel


class AttentionDrop:
    """Forward hooks that zero the self-attention outputs of the layers under `prefixes` for a random share `p` of a
    batch's samples (one draw per sample for all those layers together, so a dropped sample has none of them), only
    while gradients are on: the network must then draw from its other layers what those give (--drop-attention; the
    unrolled second step's first pass, under no_grad, and every evaluation run whole). Its transformer blocks add
    attn1's output to their input, so a zeroed output is the layer skipped. remove() takes the hooks off."""

    def __init__(self, unet, prefixes, p: float, gen: torch.Generator):
        self.p, self.gen, self.keep = p, gen, None
        mods = [m for _, m in self_attention_under(unet, tuple(prefixes))]
        if not mods:
            raise SystemExit(f"--drop-attention: no self-attention layer under {', '.join(prefixes)}.")
        self.handles = [mods[0].register_forward_pre_hook(self._draw)]
        self.handles += [m.register_forward_hook(self._zero) for m in mods]

    def _draw(self, _m, args):
        self.keep = None
        if torch.is_grad_enabled():
            self.keep = (torch.rand(args[0].shape[0], generator=self.gen) >= self.p).to(args[0].dtype)

    def _zero(self, _m, _i, out):
        return out if self.keep is None else out * self.keep.view(-1, *([1] * (out.dim() - 1)))

    def remove(self):
        for h in self.handles:
            h.remove()


def add_arguments(ap) -> None:
    """The stage's own switches on the training command's parser (stage attend's, and attend-recipe's)."""
    ap.add_argument("--recipe", choices=sorted(RECIPES), default=RECIPE,
                    help="stage attend-recipe: which of stage 10's recipes (attend.RECIPES) to run or resume")
    ap.add_argument("--resume-point", action="store_true",
                    help="stage attend-recipe: first put the recipe's committed resume point (attend.resume_point: "
                         "its UNet, text encoder and training.json) into --out, a copy of the toy's folder, when it has "
                         "had more of the recipe than --out; the recipe then runs only what follows it")
    ap.add_argument("--attend-steps", type=int, default=ATTEND_STEPS)
    ap.add_argument("--shared-weight", type=float, default=SHARED_ATTN_WEIGHT)
    ap.add_argument("--shared-sigma", type=float, default=None,
                    help="stage attend: the psychedelic style's Gaussian colour kernel of this width (sessions 15-16) instead of "
                         "the cosine kernel (styles.SHARED_KERNEL)")
    ap.add_argument("--probe-lr", type=float, default=None,
                    help="stage attend: the output probes' own learning rate (default: the stage's)")
    ap.add_argument("--built-head", type=float, default=0.0, metavar="WEIGHT",
                    help="stage attend: build the shared-choice head (shared_head) and supervise it with this weight")
    ap.add_argument("--self-target", action="store_true",
                    help="stage attend, with --built-head: the psychedelic targets rendered from the model's own head (model card)")
    ap.add_argument("--built-head-forced", action="store_true",
                    help="stage attend, a diagnostic: the built head's output replaced by the exact shared choice in training")
    ap.add_argument("--attend-from-scratch", action="store_true",
                    help="stage attend: a freshly initialised UNet of the attention-everywhere layout (the autoencoder, text "
                         "encoder and scheduler of --out kept) instead of the warm start; trained at stage 3's learning rate")
    ap.add_argument("--attend-lr", type=float, default=None,
                    help="stage attend: its peak learning rate (default: stage 3's with --attend-from-scratch, else ATTEND_LR); "
                         "on a folder that already has the layout the stage continues its training, and training.json adds the steps")
    ap.add_argument("--commit", type=float, default=0.0, metavar="SHARE",
                    help="stage attend: this share of the x0 loss winner-takes-all between a shared-choice style's "
                         "rendering and its opposite choice (the psychedelic turn; the snowy scene's snow under "
                         "--snow-cover; train.commit_loss), so that the model draws a choice outright, not their mean")
    ap.add_argument("--shared-texture", type=float, default=0.0, metavar="G",
                    help="stage attend: the psychedelic style's region takes the noise of its most textured cells (logits "
                         "+ G x texture, styles.SHARED_TEXTURE; turn 45 tanh(m)) instead of the mean of all its cells")
    ap.add_argument("--latent-kernel", type=float, default=0.0, metavar="KAPPA",
                    help="stage attend: the psychedelic choice keyed on the similarity of the crops' SOURCE LATENTS, KAPPA "
                         "cos (styles.latent_shared_noise), a kernel the UNet's input gives exactly, instead of colours")
    ap.add_argument("--snow-cover", type=float, default=0.0, metavar="AMOUNT",
                    help="stage attend, with --latent-kernel: the snowy scene's regions also take snow (up to this share "
                         "of white) where the psychedelic style's shared choice is positive (styles.snow_covered)")
    ap.add_argument("--snow-shade", type=float, default=0.0, metavar="AMOUNT",
                    help="stage attend, with --snow-cover: where the shared choice is negative the snowy scene's regions "
                         "take the snow's mirror image, pushed away from white by up to this share (a deep cold shade), "
                         "instead of staying bare, so that at equal shares the mean of the two choices is the snowy "
                         "scene, not a half-white haze (styles.SNOW_SHADE)")
    ap.add_argument("--keep-fresh-noise", action="store_true",
                    help="stage attend: the in-style samples noised with another noise than their target's "
                         "(batches.IN_STYLE_FRESH_NOISE), as a stream's second step gets them")
    ap.add_argument("--unroll", type=float, default=0.0, metavar="SHARE",
                    help="stage attend: this share of the pairs trained as a stream's second step, on the model's own "
                         "first-step output noised again (train.unroll_second_step)")
    ap.add_argument("--style-weight", action="append", default=[], metavar="NAME=W",
                    help="stage attend: how often a style is drawn, over train.REFINE_STYLE_WEIGHTS' (repeatable), "
                         "e.g. --style-weight 'snowy scene=5' --style-weight sepia=2")
    ap.add_argument("--psychedelic-weight", type=float, default=PSYCHEDELIC_WEIGHT,
                    help="stage attend: how often the psychedelic style is drawn beside the others (their weights: "
                         "train.REFINE_STYLE_WEIGHTS, 1 if unnamed); the one-layer benchmark (benchmarks/"
                         "shared_choice_learnability.py) found the choice only after thousands of batches of it")
    ap.add_argument("--stem-first", type=int, default=0, metavar="STEPS",
                    help="stage attend: first train the UNet's stem alone on the psychedelic choice, read by a probe on "
                         "the first full-resolution self-attention (stem_first), then the joint stage")
    ap.add_argument("--stem-lr", type=float, default=STEM_LR, help="stage attend: the stem's learning rate under --stem-first")
    ap.add_argument("--shared-out-weight", type=float, default=SHARED_OUT_WEIGHT,
                    help="stage attend: weight of the probe loss on the self-attention outputs of --shared-out-layers")
    ap.add_argument("--shared-out-layers", default=",".join(SHARED_OUT_LAYERS), metavar="PREFIXES",
                    help="stage attend: comma-separated layer-name prefixes whose self-attention outputs the probes read "
                         "(a layer of fewer tokens reads the choice average-pooled to its grid)")
    ap.add_argument("--full-res-heads", type=int, default=0, metavar="N",
                    help="stage attend: first regroup the full-resolution attention into N heads (arch.with_full_res_heads; "
                         "every weight kept, the function not), then train; 0 keeps the folder's")
    ap.add_argument("--drop-attention", type=float, default=0.0, metavar="P",
                    help="stage attend: zero the self-attention outputs of --drop-layers for this share of the samples "
                         "in training (AttentionDrop), so that the other levels learn to carry what those carry")
    ap.add_argument("--drop-layers", default=",".join(SHARED_ATTN_LAYERS), metavar="PREFIXES",
                    help="stage attend, with --drop-attention: the layers dropped together (default: the full-resolution ones)")


def _prefixes(text: str) -> tuple:
    """A switch's comma-separated layer-name prefixes (--shared-out-layers, --drop-layers), blanks left out."""
    return tuple(s.strip() for s in text.split(",") if s.strip())


def style_weights(items) -> dict:
    """{style name: weight} from --style-weight's NAME=W items; a name that is no style stops the run."""
    names = {s.name for s in STYLES + (PSYCHEDELIC,)}
    out = {}
    for item in items:
        name, _, w = item.rpartition("=")
        if name.strip() not in names:
            raise SystemExit(f"--style-weight {item!r}: use NAME=W with NAME one of {', '.join(sorted(names))}.")
        out[name.strip()] = float(w)
    return out


def run(args, pool, kodak_once, stages) -> None:
    """Stage 10 on the folder args.out (warm start from its UNet, or a fresh one with --attend-from-scratch; a folder
    that already has the layout is continued), written back with its figures in training.json. `stages`: the training
    module (v2v_core.toy.train), whose loop, loader and writer this stage uses; handed in by its main so that this
    module does not import it back (no import circle)."""
    if args.shared_sigma is not None:
        _styles.SHARED_KERNEL, _styles.SHARED_SIGMA = "gauss", args.shared_sigma   # the rule and the losses' targets alike
    if args.shared_texture and (args.shared_weight or args.shared_out_weight):
        raise SystemExit("--shared-texture changes the psychedelic rule, and the map and probe losses (--shared-weight, "
                         "--shared-out-weight) still target the colour kernel's mean: set them to 0 with it.")
    if args.snow_cover and not args.latent_kernel:
        raise SystemExit("--snow-cover renders the snowy scene's snow from the latent-keyed shared choice: add "
                         "--latent-kernel KAPPA (64 in the model card's runs).")
    if args.latent_kernel:
        _styles.SHARED_KERNEL, _styles.SHARED_KAPPA = "latent", args.latent_kernel
    if args.snow_shade and not args.snow_cover:
        raise SystemExit("--snow-shade is the other side of the snow cover's choice: add --snow-cover AMOUNT.")
    _styles.SNOW_COVER, _styles.SNOW_SHADE = args.snow_cover, args.snow_shade
    _batches.IN_STYLE_FRESH_NOISE = args.keep_fresh_noise
    _corr.SHARED_OUT_LAYERS = _prefixes(args.shared_out_layers)
    if args.shared_texture:
        _styles.SHARED_TEXTURE, _styles.SHARED_GAIN = args.shared_texture, 1.0

    torch.manual_seed(args.seed)
    pipe = stages._load(args.out)
    continued = has_everywhere_layout(pipe.unet.config) and not args.attend_from_scratch
    done = stages.training_info(args.out) if continued else {}   # the runs it continues
    if args.attend_from_scratch:       # the layout freshly initialised, not v3.4's weights copied in and dropped
        from diffusers import UNet2DConditionModel

        torch.manual_seed(args.seed + 11)
        pipe.unet = UNet2DConditionModel.from_config(everywhere_config(pipe.unet.config))
    else:
        pipe.unet = attention_everywhere(pipe.unet)
    if args.full_res_heads:
        pipe.unet = with_full_res_heads(pipe.unet, args.full_res_heads)
    weights = {**stages.REFINE_STYLE_WEIGHTS, "psychedelic": args.psychedelic_weight}
    weights.update(style_weights(args.style_weight))
    lr = args.attend_lr if args.attend_lr is not None else stages.UNET_LR if args.attend_from_scratch else ATTEND_LR
    t0 = time.time()
    if args.built_head:
        build_shared_head(pipe.unet, fit_readout(pipe.unet, pipe.vae, pipe.scheduler.alphas_cumprod.float(),
                                                 kodak_once(), (T_MIN, T_MAX), seed=args.seed))
    # A continued run draws batches of its own: seeded by the steps already done, not the first run's seed again
    # (every run that continued a folder, sessions 19-24, replayed the first run's batches).
    seed = args.seed + done.get("attend_steps", 0)
    stem_rel = stem_first(pipe, pool + kodak_once(), args.stem_first, seed + 12, stages, args.stem_lr) if args.stem_first else None
    drop_layers = _prefixes(args.drop_layers)
    drop = (AttentionDrop(pipe.unet, drop_layers, args.drop_attention, torch.Generator().manual_seed(seed + 13))
            if args.drop_attention else None)
    try:
        stages.tune_unet(pipe, pool + kodak_once(), args.attend_steps, seed + 10, lr=lr, corr_weight=args.corr_weight,
                         style_weights=weights, desc="attend", styles=STYLES + (PSYCHEDELIC,),
                         shared_weight=args.shared_weight, shared_out_weight=args.shared_out_weight, probe_lr=args.probe_lr,
                         head_weight=args.built_head, head_forced=args.built_head_forced, self_target=args.self_target,
                         commit=args.commit, unroll=args.unroll)
    finally:
        if drop is not None:
            drop.remove()
    stages.save(pipe, args.out, {"attend_steps": done.get("attend_steps", 0) + args.attend_steps, "attend_run_steps": args.attend_steps, "attend_built_head": args.built_head,
                          "attend_built_head_forced": args.built_head_forced, "attend_commit": args.commit,
                          "attend_shared_texture": _styles.SHARED_TEXTURE, "attend_shared_gain": _styles.SHARED_GAIN,
                          "attend_from_scratch": args.attend_from_scratch or done.get("attend_from_scratch", False),
                          "attend_corr_sharpen": _corr.CORR_SHARPEN, "attend_corr_layers": list(_corr.CORR_LAYERS), "attend_self_target": args.self_target,
                          "attend_kernel": [_styles.SHARED_KERNEL, _styles.SHARED_KAPPA, _styles.SHARED_BETA], "attend_shared_out_weight": args.shared_out_weight,
                          "attend_shared_sigma": _styles.SHARED_SIGMA, "attend_probe_lr": args.probe_lr, "attend_minutes": round((time.time() - t0) / 60, 1),
                          "attend_lr": lr, "attend_style_weights": weights, "attend_stem_first": args.stem_first,
                          "attend_stem_lr": args.stem_lr if args.stem_first else None, "attend_stem_probe_relative_mse": stem_rel,
                          "attend_shared_weight": args.shared_weight, "attend_snow_cover": args.snow_cover, "attend_snow_shade": args.snow_shade, "attend_keep_fresh_noise": args.keep_fresh_noise, "attend_unroll": args.unroll, "attend_shared_layers": list(SHARED_ATTN_LAYERS),
                          "attend_shared_out_layers": list(_corr.SHARED_OUT_LAYERS), "attend_drop_attention": args.drop_attention,
                          "attend_drop_layers": list(drop_layers) if args.drop_attention else [],
                          "attend_heads": list(heads_of(pipe.unet.config))})
    print(f"attention everywhere done in {(time.time() - t0) / 60:.1f} min", flush=True)

