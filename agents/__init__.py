"""Faust workers of stream-ctr, installed as ``stream_ctr.agents``. Thin: they move records between topics and call
the Kafka-free library in :mod:`stream_ctr`. One typed object per role, built from small named units:

- :mod:`.app`: the one place a Faust app is configured (``create_app``) and the user-state codec is registered;
- :mod:`.faust_compat`: every work-around in Faust, as subclasses installed through Faust's override points;
- :mod:`.personalize`: :class:`~.personalize.PersonalizeWorker`, per-user test-then-train on ``ctr.events``;
- :mod:`.batch`: :class:`~.batch.PersonalizeStep`, what the worker does with one batch of records;
- :mod:`.dead_letters`: :class:`~.dead_letters.DeadLetters`, invalid records to ``ctr.events.dlq`` with a reason;
- :mod:`.snapshots`: reading and following ``ctr.model`` (:class:`~.snapshots.SnapshotFollower`);
- :mod:`.views`: the HTTP views of both roles;
- :mod:`.trainer`: :class:`~.trainer.TrainerWorker`, the global model's trainer (its own consumer group).
"""
