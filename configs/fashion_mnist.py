"""Fashion-MNIST image classification: a CNN (default) or an MLP baseline.

    lmjax train --config=configs/fashion_mnist.py:cnn
    lmjax train --config=configs/fashion_mnist.py:mlp
    lmjax train --config=configs/fashion_mnist.py:cnn --config.data.name=tfds:mnist

The data come from Debian's dataset-fashion-mnist package (`apt-get install
dataset-fashion-mnist`) or --config.data.dir; the official test split is evaluated only at the
end, on the best checkpoint by validation accuracy.
"""

import ml_collections

from lmjax.config import base_config
from lmjax.tasks import add_switches, with_switches


@with_switches  # 'cnn+prune': the cnn preset with the prune section (lmjax/tasks/__init__.py)
def get_config(preset: str = "cnn") -> ml_collections.ConfigDict:
    c = base_config()
    c.task = "classify"

    c.data.update(
        name="fashion_mnist",      # 'fashion_mnist' | 'tfds:<name>' (tfds:mnist, tfds:fashion_mnist)
        dir="",                    # IDX files; '' = /usr/share/datasets/fashion-mnist (Debian)
        max_examples=0,            # with tfds: read at most this many per split (0: all)
        val_size=5000,             # validation images carved from the 60k training images
        crop_padding=2,            # augmentation: random crop after padding by this many pixels
        flip=True,                 # augmentation: random horizontal flip
        eval_flip=False)           # evaluation: average each image's and its mirror's predictions

    c.train.label_smoothing = 0.1
    c.train.class_weights = ""     # '' | 'balanced' | 'w0,w1,...'
    c.train.early_stopping_metric = "accuracy"  # the best checkpoint is what gets tested
    c.train.early_stopping_mode = "max"
    c.train.eval_every = 430       # about an epoch at batch 128
    c.train.log_every = 100
    c.checkpoint.every = 430

    c.optim.schedule = "cosine"
    c.optim.weight_decay = 5e-4

    if preset == "cnn":
        # One 3x3 convolution per block and a dense head: XLA's CPU convolutions are slow at
        # narrow widths, dense layers are cheap capacity. Light regularisation, since the model
        # underfits in 10 minutes; flip test-time augmentation. The recipe search and the
        # preset's accuracy: docs/baselines.md#results.
        c.model.update(name="cnn", channels=(16, 32, 64), convs_per_block=1, head_hidden=(256,),
                       dropout=0.1, bn_momentum=0.9)
        c.data.update(crop_padding=1, eval_flip=True)
        c.train.update(num_steps=5000, batch_size=128, eval_every=860)  # 11.6 epochs
        c.optim.update(name="adamw", learning_rate=3e-3, warmup_steps=200)
    elif preset in ("robust", "ensemble"):
        # The cnn preset with a training switch (docs/robustness.md): adversarial training
        # with FGSM from a random start at eps 0.1 (Wong et al. 2020), or 5 members vmapped.
        c = get_config("cnn")
        if preset == "robust":
            add_switches(c, "robust")
            c.robust.update(attack="fgsm_rs", eps=0.1)
            c.data.eval_flip = False  # the attacked model is the plain one
            # FGSM-RS costs about two plain steps: 2,000 fit the 10 minutes (clean and PGD-20
            # accuracy: docs/robustness.md#results).
            c.train.update(num_steps=2000, eval_every=1000)
        else:
            add_switches(c, "ensemble")
            c.ensemble.members = 5
            c.train.label_smoothing = 0.0  # smoothed members are under-confident: ECE
            #                                would measure the smoothing, not the ensemble
    elif preset == "mlp":
        c.model.update(name="mlp", hidden=(512, 256), dropout=0.2)
        c.train.update(num_steps=6000, batch_size=128, eval_every=860)
        c.optim.update(name="adamw", learning_rate=1e-3, warmup_steps=200)
        c.data.update(crop_padding=0, flip=False)
    elif preset == "dp":
        # DP-SGD (docs/privacy.md): group norm, since batch norm mixes examples; a small model,
        # since per-example gradients cost memory and time per parameter; large expected
        # batches (noise / batch shrinks); the noise calibrated to spend epsilon=3 at delta=1e-5.
        c.model.update(name="cnn", channels=(8, 16, 32), convs_per_block=1, head_hidden=(32,),
                       dropout=0.0, norm="group")
        c.data.update(crop_padding=0, flip=False, eval_flip=False)
        c.train.update(num_steps=600, batch_size=512, eval_every=200, log_every=20,
                       label_smoothing=0.0, eval_examples=2000)  # docs/privacy.md#results
        c.checkpoint.every = 200
        c.optim.update(name="adamw", learning_rate=3e-3, warmup_steps=20, clip_norm=0.0,
                       weight_decay=0.0)
        add_switches(c, "privacy")
        c.privacy.update(dp=True, clip_norm=1.0, target_epsilon=3.0, delta=1e-5)
    elif preset == "fedavg":
        # Federated averaging (docs/federated.md): the cnn preset's model on 100 clients, 10
        # sampled per round, 5 local epochs of SGD at batch 10 (McMahan et al.'s C=0.1, E=5,
        # B=10); 50 rounds, each a step of the loop. Clients in turn (lax.map), not vmapped:
        # vmapped convolutions over per-client weights are slower on XLA's CPU backend
        # (benchmarks/federated.py; docs/federated.md#results).
        c = get_config("cnn")
        add_switches(c, "federated")
        c.federated.update(clients=100, fraction=0.1, local_epochs=5, local_batch=10,
                           client_lr=0.05, clients_at_once="map")
        c.train.update(num_steps=50, eval_every=5)
        # The server's optimizer: FedAvg's plain SGD at rate 1 (docs/federated.md).
        c.optim.update(name="sgd", learning_rate=1.0, momentum=0.0, schedule="constant",
                       warmup_steps=0, clip_norm=0.0, weight_decay=0.0)
        c.checkpoint.every = 5
    elif preset == "tiny":  # seconds, for tests
        c.model.update(name="cnn", channels=(8, 16), convs_per_block=1, head_hidden=(),
                       dropout=0.0, bn_momentum=0.9)
        c.train.update(num_steps=20, batch_size=32, eval_every=10, log_every=5,
                       final_eval_examples=256, eval_examples=256)
        c.data.max_examples = 0
        c.optim.update(name="adamw", learning_rate=3e-3, warmup_steps=2)
        c.checkpoint.every = 10
        c.log.progress_bar = False
    else:
        raise ValueError(f"unknown preset {preset!r}: use cnn, mlp, tiny, robust, ensemble, dp or fedavg")
    return c
