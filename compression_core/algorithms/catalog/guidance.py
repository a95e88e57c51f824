"""When to use each built-in algorithm: the ``when_to_use`` of its registry entry (shown on the algorithms page).

Each text says what situation the algorithm suits and, where another one
does better, which. The pruner benchmark (``docs/pruner-benchmark.md``)
and the quantization benchmark (``docs/quantization-benchmark.md``) back
the comparisons.
"""

from __future__ import annotations

WHEN_TO_USE: dict[str, str] = {
    # -- pruning -----------------------------------------------------------------------------------
    "LevelPruner": (
        "To shrink the stored model (with sparse storage) or to study unstructured sparsity, where it keeps the "
        "most accuracy per removed weight; no data needed. It does not make a dense model faster (no channel is "
        "removed): for latency choose a channel pruner such as L1NormPruner. Balanced mode suits hardware with "
        "N:M sparse kernels."
    ),
    "L1NormPruner": (
        "The first try for a faster, smaller model when you have no data: whole channels go, speedup removes "
        "them, and a few fine-tuning epochs recover most of the accuracy. Also prunes whole attention heads. At "
        "high sparsity, or without fine-tuning, AGPPruner or a data-driven ranking (Taylor) usually keeps more."
    ),
    "L2NormPruner": (
        "As L1NormPruner (no data, channels removed); the L2 norm weighs a channel's few large weights more than "
        "many small ones. The two usually agree: compare them when a run is borderline."
    ),
    "FPGMPruner": (
        "No data, channels removed, when the filters' norms are all alike (a norm pruner then ranks by noise): "
        "it removes the redundant filters, those the others can replace. Convolutions and Linear layers, not "
        "attention heads."
    ),
    "ActivationAPoZRankPruner": (
        "With a dataset and a ReLU network whose activations are often zero: a channel that is almost always "
        "off contributes little whatever its weights. Less telling after GELU or identity activations, whose "
        "outputs are rarely exactly zero: use TaylorFOWeightPruner there."
    ),
    "ActivationMeanRankPruner": (
        "With a dataset, when what the channels output on your data matters more than their weights (e.g. a "
        "model trained on other data): removes the channels that stay quiet. A cheap data-driven alternative to "
        "the norm pruners (a few forward passes)."
    ),
    "TaylorFOWeightPruner": (
        "With a labelled dataset, when you want the ranking that estimates each channel's effect on the loss "
        "directly: usually the strongest one-shot channel ranking. Costs training_steps forward and backward "
        "passes."
    ),
    "SlimPruner": (
        "For convolutional networks with a BatchNorm after each pruned convolution, with a dataset: the L1 "
        "penalty lets the network choose which channels to give up, and the global ranking sets uneven "
        "per-layer sparsities. Select the BatchNorm2d layers; not for models without BatchNorm."
    ),
    "ADMMPruner": (
        "For high fine-grained sparsity with a dataset and time to train: the weights move toward the sparse "
        "solution before the cut, so the cut costs less accuracy than one-shot magnitude pruning. Like "
        "LevelPruner, it does not make a dense model faster."
    ),
    "AGPPruner": (
        "For high channel sparsity (75 % and more) with a dataset: pruning gradually, training between steps, "
        "keeps far more accuracy than one cut to the final sparsity. Costs total_iteration rounds of training."
    ),
    "LotteryTicketPruner": (
        "To find a sparse subnetwork that trains as well as the dense one (research, or retraining from "
        "scratch); costs several training rounds. For a deployable smaller model fine-tuned from the trained "
        "weights, AGPPruner or L1NormPruner with fine-tuning is cheaper."
    ),
    "SimulatedAnnealingPruner": (
        "When per-layer sparsities matter (some layers are fragile) and you have a dataset and time: it searches "
        "them for one overall sparsity instead of the same ratio everywhere. Fine-grained by default; for a "
        "FLOPs or latency budget use AutoTargetPruner."
    ),
    "NetAdaptPruner": (
        "With a dataset, when the network should be pruned where it hurts least, step by step with short "
        "fine-tuning; slow on models with many layers (each step tries every layer)."
    ),
    "AutoCompressPruner": (
        "For the highest fine-grained sparsity with a dataset and a generous time budget: searched per-layer "
        "ratios, then ADMM. The most expensive pruner here; try AGPPruner or SimulatedAnnealingPruner first."
    ),
    "AutoTargetPruner": (
        "When you know the budget (keep 40 % of the FLOPs, parameters or latency) rather than the per-layer "
        "sparsities, and want an accuracy floor checked: it measures each layer group's sensitivity and "
        "searches the ratios for you. Needs a dataset; takes a sensitivity analysis plus the search."
    ),
    # -- analysis ----------------------------------------------------------------------------------
    "SensitivityAnalysis": (
        "Before choosing per-layer sparsities by hand: the curves show which layer groups tolerate heavy "
        "pruning and which must be spared. Needs a dataset; costs one evaluation per group and sparsity. "
        "AutoTargetPruner runs the same analysis and then chooses for you."
    ),
    # -- quantization ------------------------------------------------------------------------------
    "PostTrainingQuantizer": (
        "The first try for a faster CPU model: static int8 with a few hundred calibration samples gives about "
        "4x smaller weights and often 2x or more speed on x86, no training. Dynamic mode needs no data and "
        "suits Linear/LSTM-heavy models (MLPs, transformers). If accuracy drops too much, use QATQuantizer."
    ),
    "QATQuantizer": (
        "When post-training int8 loses too much accuracy (compact models such as MobileNet, depthwise "
        "convolutions): training with fake quantization recovers it. Needs a labelled or unlabelled dataset "
        "and some epochs of training; gives the same real int8 model as PostTrainingQuantizer."
    ),
    "NaiveQuantizer": (
        "A quick, data-free look at how much 8-bit (or lower) weights cost in accuracy, or weights to ship "
        "packed at a lower bit width. It does not make the model faster (float32 kernels); for speed use "
        "PostTrainingQuantizer."
    ),
    "DoReFaQuantizer": (
        "For weights below 8 bits (2 to 4) where rounding alone destroys accuracy: training learns weights that "
        "survive the coarse grid. Needs a dataset and epochs; simulated, so it saves storage (packed weights), "
        "not time, unless your target hardware has low-bit kernels."
    ),
    "BNNQuantizer": (
        "For research on binary networks or hardware with XNOR/popcount kernels: 1-bit weights, 32x smaller "
        "packed. Expect a large accuracy drop on small models even after training; needs a dataset and "
        "several epochs."
    ),
}
