"""Readers for the image sources gahb trains on (paper section 2).

Every reader comes in two flavours:

* ``read_*`` returns a float32 tensor (N, C, H, W) on the pixel scale [0, 1], which is what the
  rest of gahb consumes;
* ``read_*_raw`` returns a :class:`RawImages`, the compact *stored* form: an integer (or float32)
  array together with a ``scale`` such that ``pixel = stored / scale`` (:mod:`.stored`, which
  lists the stored representations).

One module per source format: :mod:`.idx` (IDX files, Fashion-MNIST), :mod:`.images` (image
files and folders, CelebA, LSUN; ``load_image``/``save_image``) and :mod:`.arrays`
(``.npy``/``.npz`` stacks).
"""

from .arrays import FLOAT_TOLERANCE, array_layout, load_array, read_array_raw
from .idx import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_INSTALL_HINT,
    FASHION_MNIST_PARTS,
    fashion_mnist_files,
    read_fashion_mnist_raw,
    read_idx,
)
from .images import (
    CELEBA_CROP,
    CELEBA_SHAPE,
    IMAGE_EXTENSIONS,
    LSUN_CROP,
    ImageReadError,
    center_crop,
    list_images,
    load_image,
    read_celeba_raw,
    read_image_folder_raw,
    read_lsun_raw,
    save_image,
)
from .stored import ArrayFactory, RawImages, to_float

__all__ = [
    "CELEBA_CROP", "CELEBA_SHAPE", "FASHION_MNIST_DIR", "FASHION_MNIST_INSTALL_HINT", "FASHION_MNIST_PARTS",
    "FLOAT_TOLERANCE", "IMAGE_EXTENSIONS", "LSUN_CROP", "ArrayFactory", "ImageReadError", "RawImages",
    "array_layout", "center_crop", "fashion_mnist_files", "list_images", "load_array", "load_image",
    "read_array_raw", "read_celeba_raw", "read_fashion_mnist_raw",
    "read_idx", "read_image_folder_raw", "read_lsun_raw", "save_image", "to_float",
]
