"""DeepACE: automated chromosome enumeration in metaphase images (Xiao et al. 2019)."""

__version__ = "0.1.0"
