"""A trained run's weights put to use, without the training loop: :mod:`.evaluate` measures them on a
split (``cifar-scratch evaluate``), :mod:`.predict` classifies image files (``cifar-scratch predict``)."""
