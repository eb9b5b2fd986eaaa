"""Kafka: the local KRaft broker built from Maven Central jars (:mod:`.kafka`), topic administration
(:mod:`.admin`), consumer lag (:mod:`.lag`), reading a topic to its end (:mod:`.read`) and producing click events
(:mod:`.replay`). The only package that speaks to Kafka outside the Faust agents.

Layer 4: may import process, contracts and the topic declarations.
"""
