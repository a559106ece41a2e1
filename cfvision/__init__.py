"""collabfeat vision: CNNs that learn from what users do with images.

Fang et al. 2015 — a CNN trained on collaborative pseudo-classes (``train``, ``extract``,
``evaluate``); Bibas et al. 2022 — a CNN that labels new images, guided during training by
CF vectors (``cf2label``, ``protocol``, ``multitask``, ``experiment``).

Depends on torch and torchvision (``pip install collabfeat[vision]``); imports from
``cfcore`` but ``cfcore`` never imports it.

>>> from cfvision.train import TrainConfig, train
>>> result = train(TrainConfig(images="posters/", labels="labels.npz", output="run/",
...                            id_space="ml-100k", arch="resnet18", image_size=96, epochs=10))
>>> from cfvision.data import load_image_index, prepare_images, resize_size
>>> from cfvision.extract import extract_features
>>> images = prepare_images(load_image_index("posters/", "ml-100k"), None, resize_size(96))
>>> features = extract_features(result.model, images, 96)

>>> from cfvision.multitask import MultitaskConfig, train_multitask
>>> run = train_multitask(MultitaskConfig(images="movielens-posters", id_space="ml-100k",
...     labels="ml-100k", interactions="ml-100k", output="mtl/", method="mtl",
...     confidence="loss", arch="small", image_size=64, epochs=15))
>>> run.result["test_map"], run.result["test_map_ci"]

Modules: ``data`` (image index, labels, id matching), ``cache`` (images decoded once into a
uint8 memory map), ``loader`` (batches, crops, device transfer), ``models``, ``train`` (the
loop every task shares), ``extract``, ``evaluate``; ``cf2label`` (labels from CF vectors),
``protocol`` (held-out new images, CF vectors, label ratio), ``multitask`` (losses,
confidences, one method's run), ``experiment`` (the grid, its table and figure);
``pipeline`` (runs a job file's stages, each in its own process; no torch), ``stages`` (the
job's torch stages), ``report`` (Markdown + PNGs + a self-contained HTML page of a run);
``cli``, ``cli_multitask``, ``cli_options``.

>>> from cfvision.pipeline import run_job
>>> result = run_job("examples/simulated.toml", log=print)   # runs/simulated/report/
"""

__version__ = "0.1.0"
