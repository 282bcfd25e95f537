"""Shared by the engine tests on CPU and on CUDA."""

from hpstudy.trainables import TIMING_FIELDS


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING_FIELDS} for h in history]


class Crash(Exception):
    pass


class CrashAfter:
    """A reporter that dies after epoch k, as a killed worker would."""

    def __init__(self, epoch):
        self.epoch = epoch

    def report(self, metrics, checkpoint_dir):
        if metrics["epoch"] == self.epoch:
            raise Crash()

    def check_stop(self):
        pass

    def finish(self, result):
        pass
