"""Shared by the engine tests on CPU and on CUDA."""

from hpstudy.trainables import TIMING_FIELDS, Reporter


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING_FIELDS} for h in history]


class Crash(Exception):
    pass


class CrashAfter(Reporter):
    """A reporter that dies after epoch k, as a killed worker would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def report(self, metrics, checkpoint_dir):
        if metrics["epoch"] == self.epoch:
            raise Crash()

    def finish(self, result):
        pass
