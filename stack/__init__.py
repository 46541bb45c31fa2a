"""Starting the service on this machine: the native launcher and what benchmarks and tests share.

`python -m stack up|down|status|logs` (make up/down/status/logs) runs the launcher
(stack/launcher.py); TorchServe control is stack/torchserve.py, process groups stack/processes.py.
The benchmarks (bench/) and the tests (tests/) start their private stacks through this package;
the product (facade/, handler/) never imports it.
"""
