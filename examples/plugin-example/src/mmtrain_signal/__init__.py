"""mmtrain-signal: a `signal` modality (short time series, 1-D convs) and a
`gated_attention` aggregator, registered with mmtrain through the `mmtrain.plugins` entry
point."""

from mmtrain_signal.aggregator import GatedAttention, GatedAttentionMixture
from mmtrain_signal.modality import SignalPlugin

__version__ = "0.1.0"
__all__ = ["GatedAttention", "GatedAttentionMixture", "SignalPlugin"]
