"""Inter-coded keyframe streams: the IDR request, the edge's per-stream decoders and their rule."""
import numpy as np
import pytest

from stac.codec import H264Codec, make_codec
from stac.codec.h264 import is_idr, sps_size
from stac.edge.streams import NeedIdr, Stream, StreamDecoders, new_stream_id


def _encoder():
    return make_codec("h264:crf=30,preset=veryfast")


def test_request_idr_makes_the_next_unit_an_idr_and_position_counts_units(bikes_frames):
    codec = _encoder()
    units = [codec.encode(f) for f in bikes_frames[:3]]
    assert [is_idr(u) for u in units] == [True, False, False] and codec.position == 3
    codec.request_idr()
    idr, after = codec.encode(bikes_frames[3]), codec.encode(bikes_frames[4])
    assert is_idr(idr) and not is_idr(after) and len(idr) > 4 * len(after)
    # the IDR starts a decoder that has seen nothing of the stream
    decoders = StreamDecoders()
    assert decoders.decode(1, 3, idr).shape == (272, 640, 3)
    assert decoders.decode(1, 4, after).shape == (272, 640, 3)


def test_out_of_order_late_and_unknown_units_are_refused(bikes_frames):
    codec = _encoder()
    units = [codec.encode(f) for f in bikes_frames[:4]]
    decoders = StreamDecoders()
    with pytest.raises(NeedIdr, match="not held"):
        decoders.decode(7, 1, units[1])
    decoders.decode(7, 0, units[0])
    with pytest.raises(NeedIdr, match="next decodable is 1"):
        decoders.decode(7, 2, units[2])  # unit 1 lost
    decoders.decode(7, 1, units[1])  # a refusal leaves the stream as it was
    with pytest.raises(NeedIdr, match="next decodable is 2"):
        decoders.decode(7, 1, units[1])  # twice
    decoders.decode(7, 2, units[2])
    with pytest.raises(ValueError) as corrupt:
        decoders.decode(7, 3, b"\x00\x00\x01\x41" + bytes(40))
    assert not isinstance(corrupt.value, NeedIdr) and len(decoders) == 0  # its references are gone
    with pytest.raises(NeedIdr):
        decoders.decode(7, 3, units[3])


def test_streams_are_separate_and_the_least_recently_used_is_evicted(bikes_frames, carphone_frames):
    decoders = StreamDecoders(max_streams=2)
    a, b, c = _encoder(), _encoder(), _encoder()
    decoders.decode(1, 0, a.encode(bikes_frames[0]))
    decoders.decode(2, 0, b.encode(carphone_frames[0]))
    assert decoders.decode(1, 1, a.encode(bikes_frames[1])).shape == (272, 640, 3)
    assert decoders.decode(2, 1, b.encode(carphone_frames[1])).shape == (144, 176, 3)
    decoders.decode(3, 0, c.encode(bikes_frames[2]))  # a third stream evicts stream 1, the least recently used
    assert len(decoders) == 2
    with pytest.raises(NeedIdr, match="not held"):
        decoders.decode(1, 2, a.encode(bikes_frames[2]))
    decoders.decode(2, 2, b.encode(carphone_frames[2]))
    decoders.end(2)
    assert len(decoders) == 1


def test_a_stream_idle_past_the_limit_is_released(carphone_frames):
    """An abandoned stream's decoder is freed once it has been idle as long as Triton keeps its sequence slot."""
    now = [0.0]
    decoders = StreamDecoders(idle_s=60, clock=lambda: now[0])
    a, b = _encoder(), _encoder()
    decoders.decode(1, 0, a.encode(carphone_frames[0]))  # abandoned after this
    now[0] = 30.0
    decoders.decode(2, 0, b.encode(carphone_frames[0]))
    now[0] = 61.0
    decoders.decode(2, 1, b.encode(carphone_frames[1]))  # stream 1, idle 61 s, goes; stream 2 (idle 31 s) stays
    assert len(decoders) == 1
    with pytest.raises(NeedIdr, match="not held"):
        decoders.decode(1, 1, a.encode(carphone_frames[1]))


def test_a_unit_too_large_for_the_edge_is_refused_from_its_parameter_set(bikes_frames, carphone_frames):
    codec = H264Codec(crf=30, preset="veryfast")
    idr, p_frame = codec.encode(bikes_frames[0]), codec.encode(bikes_frames[1])
    assert sps_size(idr) == (272, 640) and sps_size(p_frame) is None
    assert sps_size(H264Codec().encode(np.ascontiguousarray(carphone_frames[0][:101, :99]))) == (112, 112)
    streams = StreamDecoders()
    with pytest.raises(ValueError, match="H.264 frame 640x272 is larger than this edge accepts"):
        streams.decode(1, 0, idr, max_pixels=640 * 271)
    assert len(streams) == 0  # nothing decoded, nothing held
    assert streams.decode(1, 0, idr, max_pixels=640 * 272).shape == (272, 640, 3)
    with pytest.raises(ValueError, match="ends early"):
        sps_size(idr[:idr.index(b"\x00\x00\x01\x67") + 6])  # a parameter set cut short


def test_every_new_stream_id_costs_the_same_wire_bytes():
    from tritonclient.grpc import service_pb2

    from stac.edge.wire import _sequence

    def size(stream_id: int) -> int:
        message = service_pb2.ModelInferRequest()
        _sequence(message, Stream(stream_id, 0, True))
        return message.ByteSize()

    ids = {new_stream_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(0 < i < 2 ** 63 for i in ids)  # Triton's correlation IDs are int64, non-zero
    assert {size(i) for i in ids} | {size(2 ** 62), size(2 ** 63 - 1)} == {size(2 ** 62)}
    assert {len(str(i)) for i in ids} == {19}  # HTTP's JSON carries the decimal digits
