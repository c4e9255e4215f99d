//! Messages: what travels through a mailbox.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::ids::AgentId;

/// What a [`Message`] is for, in the seed's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MessageKind {
    /// The orchestrator hands a task to an agent.
    TaskAssignment,
    /// An agent reports a finished task.
    TaskResult,
    /// One agent to one agent ([`MessageBroker::send`](crate::MessageBroker::send)).
    Direct,
    /// One agent to all others ([`MessageBroker::broadcast`](crate::MessageBroker::broadcast)).
    Broadcast,
    /// A publication on a topic ([`MessageBroker::publish`](crate::MessageBroker::publish)).
    Publication,
    /// A control signal ([`Control`]).
    Control,
}

/// Control signals, sent with
/// [`MessageBroker::send_control`](crate::MessageBroker::send_control) and
/// read back with `message.body::<Control>()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Control {
    /// Finish what you are doing and stop.
    Stop,
    /// Show you are alive.
    Ping,
}

/// Bodies up to this many bytes live inside the envelope: a small message
/// costs one allocation, not two.
const INLINE_BODY: usize = 46;

/// The body of a message: postcard bytes, inline when small, else owned by
/// one message or shared between every recipient of a fan-out.
#[derive(Clone)]
enum Body {
    Inline { len: u8, bytes: [u8; INLINE_BODY] },
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Body {
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Body> {
        let mut bytes = [0u8; INLINE_BODY];
        match postcard::to_slice(value, &mut bytes) {
            Ok(used) => {
                let len = used.len() as u8;
                Ok(Body::Inline { len, bytes })
            }
            Err(postcard::Error::SerializeBufferFull) => {
                Ok(Body::Owned(postcard::to_allocvec(value)?))
            }
            Err(other) => Err(other.into()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Body::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Body::Owned(bytes) => bytes,
            Body::Shared(bytes) => bytes,
        }
    }
}

#[derive(Clone)]
struct Envelope {
    from: AgentId,
    kind: MessageKind,
    topic: Option<Arc<str>>,
    body: Body,
}

/// One message in a mailbox: sender, kind, optional topic and a
/// postcard-encoded body.
///
/// A `Message` is one pointer wide, so a mailbox of 1,000 slots costs 16 KB
/// whatever the bodies weigh; the envelope lives on the heap.
///
/// ```
/// use agentry::{AgentId, MessageBroker, MessageKind};
///
/// let broker = MessageBroker::new(16);
/// let mailbox = broker.register(AgentId::from(2))?;
/// broker.send(AgentId::from(1), AgentId::from(2), &("hello", 42u32))?;
///
/// let message = mailbox.recv()?;
/// assert_eq!(message.from(), AgentId::from(1));
/// assert_eq!(message.kind(), MessageKind::Direct);
/// assert_eq!(message.body::<(String, u32)>()?, ("hello".to_string(), 42));
/// # Ok::<(), agentry::Error>(())
/// ```
#[derive(Clone)]
pub struct Message(Box<Envelope>);

impl Message {
    pub(crate) fn encode<T: Serialize + ?Sized>(
        from: AgentId,
        kind: MessageKind,
        body: &T,
    ) -> Result<Message> {
        Ok(Message(Box::new(Envelope {
            from,
            kind,
            topic: None,
            body: Body::encode(body)?,
        })))
    }

    /// The notice that wakes an idle agent: its work is in its batch.
    pub(crate) fn assignment(from: AgentId) -> Message {
        Message(Box::new(Envelope {
            from,
            kind: MessageKind::TaskAssignment,
            topic: None,
            body: Body::Inline {
                len: 0,
                bytes: [0; INLINE_BODY],
            },
        }))
    }

    /// A message whose body is shared with the other recipients of a fan-out.
    pub(crate) fn shared(
        from: AgentId,
        kind: MessageKind,
        topic: Option<Arc<str>>,
        body: Arc<[u8]>,
    ) -> Message {
        Message(Box::new(Envelope {
            from,
            kind,
            topic,
            body: Body::Shared(body),
        }))
    }

    /// The sender.
    pub fn from(&self) -> AgentId {
        self.0.from
    }

    /// What the message is for.
    pub fn kind(&self) -> MessageKind {
        self.0.kind
    }

    /// The topic, for a [`MessageKind::Publication`].
    pub fn topic(&self) -> Option<&str> {
        self.0.topic.as_deref()
    }

    /// Decodes the body as a `T`.
    ///
    /// # Errors
    /// [`Error::Codec`](crate::Error::Codec) when the body is not a valid
    /// postcard encoding of `T` (for example, it was sent as another type).
    pub fn body<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(postcard::from_bytes(self.0.body.bytes())?)
    }

    /// The raw postcard bytes of the body.
    pub fn body_bytes(&self) -> &[u8] {
        self.0.body.bytes()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("from", &self.0.from)
            .field("kind", &self.0.kind)
            .field("topic", &self.0.topic)
            .field("body_len", &self.0.body.bytes().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Message>(), std::mem::size_of::<usize>());
        assert_eq!(
            std::mem::size_of::<Option<Message>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn small_and_large_bodies_round_trip() {
        for len in [0, 1, INLINE_BODY - 2, INLINE_BODY, 10_000] {
            let body = vec![0xabu8; len];
            let message = Message::encode(AgentId::from(1), MessageKind::Direct, &body).unwrap();
            assert_eq!(message.body::<Vec<u8>>().unwrap(), body);
        }
    }

    #[test]
    fn body_of_the_wrong_type_is_a_codec_error() {
        let message = Message::encode(AgentId::from(1), MessageKind::Direct, &u64::MAX).unwrap();
        assert!(matches!(
            message.body::<String>(),
            Err(crate::Error::Codec(_))
        ));
    }
}
