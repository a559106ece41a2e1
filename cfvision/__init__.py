"""collabfeat vision: CNNs trained on collaborative pseudo-classes (Fang et al. 2015).

Depends on torch and torchvision (``pip install collabfeat[vision]``); imports from
``cfcore`` but ``cfcore`` never imports it.

>>> from cfvision.train import TrainConfig, train
>>> result = train(TrainConfig(images="posters/", labels="labels.npz", output="run/",
...                            id_space="ml-100k", arch="resnet18", image_size=96, epochs=10))
>>> from cfvision.data import load_image_index, prepare_images, resize_size
>>> from cfvision.extract import extract_features
>>> images = prepare_images(load_image_index("posters/", "ml-100k"), None, resize_size(96))
>>> features = extract_features(result.model, images, 96)

Modules: ``data`` (image index, labels, id matching), ``cache`` (images decoded once into a
uint8 memory map), ``loader`` (batches, crops, device transfer), ``models``, ``train`` (the
loop every task shares), ``extract``, ``evaluate``, ``cli``.
"""

__version__ = "0.1.0"
