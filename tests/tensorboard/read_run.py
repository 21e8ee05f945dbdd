"""Reads a Kiln run folder's TensorBoard event file with TensorBoard's own reader and prints
what it found as JSON: every scalar series, the HParams session's settings and its end status.

    python tests/tensorboard/read_run.py RUN_FOLDER
"""
import json
import sys

from google.protobuf import json_format
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata

run = sys.argv[1]
# 0: keep every event (the default keeps a sample of long series).
acc = EventAccumulator(run, size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
scalars = {
    tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
}
content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
start = metadata.parse_session_start_info_plugin_data(
    content[metadata.SESSION_START_INFO_TAG]
)
hparams = {name: json_format.MessageToDict(value) for name, value in start.hparams.items()}
end = content.get(metadata.SESSION_END_INFO_TAG)
status = (
    api_pb2.Status.Name(metadata.parse_session_end_info_plugin_data(end).status)
    if end is not None
    else None
)
print(json.dumps({"scalars": scalars, "hparams": hparams, "status": status}))
