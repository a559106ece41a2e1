"""collabfeat vision: CNNs trained on collaborative pseudo-classes (Fang et al. 2015).

Depends on torch and torchvision (``pip install collabfeat[vision]``); imports from
``cfcore`` but ``cfcore`` never imports it.

>>> from cfvision.train import TrainConfig, train
>>> result = train(TrainConfig(images="posters/", labels="labels.npz", output="run/",
...                            arch="resnet18", image_size=96, epochs=10))
>>> from cfvision.extract import extract_features, save_item_vectors
"""

__version__ = "0.1.0"
