"""The global model's trainer: mini-batch torch training on the merged stream with a delta every K samples
(:mod:`.global_trainer`), data-parallel over ``torch.distributed`` (:mod:`.distributed`).

Layer 4: may import the configuration and everything below it.
"""
