"""Runtime hook: the bundle leaves out triton (build.spec), and a CUDA torch then warns "triton not found;
flop counting will not work for triton kernels" whenever the ONNX exporter imports its flop counter.
TransferLab never counts triton flops, so keep that one logger to errors."""
import logging

logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
