"""The built-in study definitions: classic vision experiments, listed explicitly by name.

Every `base` holds the classic settings (dataset, model, optimizer, epochs, ...). MNIST studies default
to the bundled `mnist-small` (5,000 real MNIST training images: 4,000 train / 1,000 validation with the
default val_fraction 0.2), so they run on a laptop as they are. CIFAR-10 studies need the data staged
(`data_dir`; 50,000 training images: 40,000 train / 10,000 validation) and use their papers' epochs.
Epochs and data sizes can be overridden at run time; `notes` says what the classic values are.
A `base` never sets a parameter its space searches (e.g. no `model` in the model-grid studies).
"""

from __future__ import annotations

from hpstudy.registry import by_name

from hpstudy.studies.definition import StudyDefinition

_MNIST = {"dataset": "mnist-small", "model": "lenet5", "epochs": 10}
_CIFAR_AUG = "crop,flip"  # the standard CIFAR augmentation (4-px pad + random crop, horizontal flip)
_MNIST_NOTE = ("Runs on the bundled mnist-small (4,000 train / 1,000 val images); use dataset 'mnist' "
               "for the full 60,000-image set (48,000 / 12,000).")
_CIFAR_NOTE = "Needs CIFAR-10 pre-staged (40,000 train / 10,000 val images after the 0.2 split)."



STUDIES: dict[str, StudyDefinition] = by_name((
    StudyDefinition(
        name="lenet5-sgd-lr-bs",
        description="LeNet-5 on MNIST with plain SGD: learning rate x batch size",
        space="lr-bs",
        base={**_MNIST, "optimizer": "sgd"},
        table=("lr", "batch_size"),
        notes="Plain SGD (no momentum), 10 epochs. Expect lr 0.1 to be best at this budget and 0.001 "
              "to be far from converged, more so with batch 128 (half the steps). " + _MNIST_NOTE,
        tags=("mnist", "lenet5", "sgd", "lr", "batch-size"),
    ),
    StudyDefinition(
        name="lenet5-optimizer-lr-bs",
        description="LeNet-5 on MNIST: optimizer x learning rate x batch size",
        space="optimizer-lr-bs",
        base=dict(_MNIST),
        table=("optimizer", "lr"),
        notes="Momentum SGD (0.9), Adagrad and Adam at lr 0.05 / 5e-4 / 5e-7, batch 64 and 256, "
              "10 epochs. 5e-7 barely moves any of them (about chance accuracy); 0.05 is fine for "
              "momentum SGD but too high for Adam (runs that diverge are stopped early). The table "
              "shows optimizer x lr, the best over batch sizes. " + _MNIST_NOTE,
        tags=("mnist", "lenet5", "optimizer", "lr", "batch-size"),
    ),
    StudyDefinition(
        name="mlp-optimizers",
        description="MLP on MNIST: sgd, adagrad, rmsprop, adam, momentum, nesterov at lr 0.01",
        space="optimizers",
        base={**_MNIST, "model": "mlp", "lr": 0.01},
        notes="One fixed lr (0.01) for all optimizers, 10 epochs, batch 128: a comparison of how "
              "each does at a common setting, not of each one's best. RMSprop and Adam usually prefer "
              "~1e-3 and may be unstable at 0.01. " + _MNIST_NOTE,
        tags=("mnist", "mlp", "optimizer"),
    ),
    StudyDefinition(
        name="simple-cnn-optimizers",
        description="Simple CNN on CIFAR-10: sgd, adagrad, rmsprop, adam, momentum, nesterov at lr 0.01",
        space="optimizers",
        base={"dataset": "cifar10", "model": "simple_cnn", "lr": 0.01, "epochs": 20,
              "augment": _CIFAR_AUG},
        notes="One fixed lr (0.01), 20 epochs, batch 128, crop+flip augmentation. RMSprop and Adam "
              "usually prefer ~1e-3 and may be unstable at 0.01. " + _CIFAR_NOTE,
        tags=("cifar10", "simple-cnn", "optimizer"),
    ),
    StudyDefinition(
        name="vgg13-optimizers",
        description="VGG-13 (batch norm) on CIFAR-10: sgd, adagrad, rmsprop, adam, momentum, nesterov "
                    "at lr 0.01",
        space="optimizers",
        base={"dataset": "cifar10", "model": "vgg13", "model_args": {"batch_norm": True}, "lr": 0.01,
              "weight_decay": 5e-4, "epochs": 30, "augment": _CIFAR_AUG},
        notes="VGG-13 with batch norm, one fixed lr (0.01), weight decay 5e-4, 30 epochs, batch 128, "
              "crop+flip. Batch norm keeps all optimizers trainable at this lr; the adaptive ones "
              "would usually prefer ~1e-3. " + _CIFAR_NOTE,
        tags=("cifar10", "vgg13", "optimizer"),
    ),
    StudyDefinition(
        name="vgg19-init",
        description="VGG-19 without batch norm on CIFAR-10: Xavier vs Kaiming, uniform vs normal init",
        space="inits",
        base={"dataset": "cifar10", "model": "vgg19", "model_args": {"batch_norm": False},
              "optimizer": "momentum", "lr": 0.01, "weight_decay": 5e-4, "epochs": 30,
              "augment": _CIFAR_AUG},
        notes="No batch norm on purpose: a 19-layer plain ReLU network is where the init matters "
              "(Glorot & Bengio 2010; He et al. 2015). SGD with momentum 0.9, lr 0.01, weight decay "
              "5e-4, 30 epochs, batch 128, crop+flip. Expect the Kaiming inits to start learning "
              "sooner; Xavier inits may sit at chance accuracy for several epochs or not train at "
              "all (the divergence/chance stop then ends the run early). " + _CIFAR_NOTE,
        tags=("cifar10", "vgg19", "init"),
    ),
    StudyDefinition(
        name="resnet34-schedulers",
        description="ResNet-34 on CIFAR-10 with Adam: constant, exponential, multistep, cyclic, "
                    "cosine warm restarts",
        space="schedulers",
        base={"dataset": "cifar10", "model": "resnet34", "optimizer": "adam", "init": "kaiming_uniform",
              "lr": 1e-3, "epochs": 100, "augment": _CIFAR_AUG},
        notes="Adam lr 1e-3, Kaiming-uniform init, 100 epochs, batch 128, crop+flip. Scheduler "
              "arguments are fixed per scheduler: exponential gamma 0.95 per epoch; multistep /10 at "
              "epochs 40, 60, 80; cyclic triangular 5e-4..5e-3 with 2,380 batches per half cycle "
              "(about 7.6 epochs at 313 batches/epoch); cosine warm restarts T_0 10, T_mult 3 "
              "(restarts after epochs 10 and 40). The arguments assume 100 epochs: with fewer, "
              "multistep and the restarts may not happen. " + _CIFAR_NOTE,
        tags=("cifar10", "resnet34", "scheduler"),
    ),
    StudyDefinition(
        name="adam-lr-bs-800",
        description="LeNet-5 with Adam on an 800-image MNIST subset: learning rate x batch size",
        space="lr-bs-wide",
        base={**_MNIST, "optimizer": "adam", "train_size": 800, "val_size": 100},
        table=("lr", "batch_size"),
        notes="Adam, 800 training / 100 validation images (subsets of the split), 10 epochs. Small "
              "data makes the lr x batch size interaction visible: small batches take many more "
              "steps, lr 0.1 is too high for Adam, 1e-4 too slow at large batches. With 100 "
              "validation images accuracy moves in 1% steps. " + _MNIST_NOTE,
        tags=("mnist", "lenet5", "adam", "lr", "batch-size", "small-data"),
    ),
    StudyDefinition(
        name="mnist-cnn-variants",
        description="Small CNNs on MNIST that differ in one trait: pooling, batch norm + dropout, "
                    "5x5 kernels, GELU",
        space="mnist-cnn-variants",
        base={"dataset": "mnist-small", "optimizer": "adam", "lr": 1e-3, "epochs": 10},
        notes="Adam lr 1e-3, 10 epochs, batch 128. cnn_relu is the baseline; each other variant "
              "changes exactly one trait of it. Differences are small on MNIST: look at the spread "
              "over seeds before reading much into them. " + _MNIST_NOTE,
        tags=("mnist", "cnn", "architecture"),
    ),
    StudyDefinition(
        name="cifar-resnet-depth",
        description="CIFAR ResNet-20/32/44/56/110 (He et al. 2016): accuracy vs depth",
        space="cifar-resnet-depth",
        base={"dataset": "cifar10", "optimizer": "momentum", "lr": 0.1,
              "weight_decay": 1e-4, "batch_size": 128, "scheduler": "multistep", "epochs": 164,
              "augment": _CIFAR_AUG},
        notes="He et al. 2016 (sec. 4.2): SGD momentum 0.9, lr 0.1, weight decay 1e-4, batch 128, "
              "crop+flip, 64k iterations with lr /10 at 32k and 48k -- the usual 164 epochs with "
              "milestones at 82 and 123. Milestones are left unset on purpose: the multistep default "
              "(50% and 75% of epochs) gives exactly 82 and 123 for 164 epochs and scales with an "
              "epochs override (e.g. 30 epochs: 15 and 22). The paper's 0.01 warm-up for ResNet-110 "
              "is not reproduced; ResNet-110 at lr 0.1 may need a second seed. " + _CIFAR_NOTE,
        tags=("cifar10", "resnet", "depth"),
    ),
    StudyDefinition(
        name="lenet5-tpe",
        description="LeNet-5 on MNIST: TPE search over optimizer, lr, batch size, weight decay, init "
                    "and scheduler, with median pruning",
        space="classic-tpe",
        base=dict(_MNIST),
        sampler="tpe",
        pruner="median",
        n_trials=30,
        notes="30 TPE trials of 10 epochs each; the median pruner stops trials whose validation "
              "accuracy is below the median of earlier trials at the same epoch. Momentum is "
              "searched only for sgd and rmsprop, scheduler arguments only for their scheduler; "
              "warmup_epochs (1..3) assumes at least 4 epochs. " + _MNIST_NOTE,
        tags=("mnist", "lenet5", "tpe", "pruning"),
    ),
), "study")
