//! The codec of Beckon's servers: prost's encoding, and a decoder that answers a request it
//! cannot decode with `INVALID_ARGUMENT`.
//!
//! tonic's prost codec answers such a request `INTERNAL`, which tells a client the server
//! failed. Bytes that are not the message the method takes (a string field that is not
//! UTF-8, a message cut short, a field of the wrong wire type) are the caller's error, and a
//! caller that retries `INTERNAL` would send them again. prost's error names the message and
//! field where decoding stopped (`Event.user_id: TrackRequest.event: ...`), and the answer
//! keeps it whole.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Encodes answers of type `T` and decodes requests of type `U`; the generated servers take
/// it by its path, so it has no settings of its own.
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { _type: PhantomData }
    }
}

/// Decodes one request message; see the module's documentation for its errors.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}
