"""The workers: a faust app that grows each call's speaker graph and emits labels."""
