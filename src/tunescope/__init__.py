"""tunescope: instruction-tune causal LMs with LoRA and full fine-tuning, and see what tuning changed.

The pipeline is data -> train -> generate -> shift -> borrow / judge / probe -> report; each
stage is a module with a library function and a thin ``tunescope <verb>`` command over it.
"""

__version__ = "0.1.0"
