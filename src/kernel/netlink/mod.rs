//! Generic netlink for kernel CARP (FreeBSD 14+): the message codec, the socket transport, the
//! controller that resolves family names, and the "carp" family itself.
//!
//! Layers, each in its own file, bottom up:
//! - [`codec`], [`attr`], [`builder`]: netlink framing and TLV attributes, hand-written and
//!   pure (the reasons are in `codec`'s header). Decoders never panic on any input.
//! - [`exchange`]: the rules of one request/response exchange (sequence numbers, ack, dump,
//!   `NLMSG_ERROR`/`NLMSG_DONE` errno of either sign), pure, fed datagram by datagram.
//! - [`socket`]: [`GenlSocket`], the raw libc socket that carries exchanges, with a receive
//!   timeout; built on Linux too, so it is tested against a real kernel.
//! - [`ctrl`]: the generic netlink controller (family name -> id).
//! - [`carp`]: the "carp" family: GET/SET builders, the GET parser, [`CarpNetlink`].
//!
//! Nothing here decides anything: SET requests carry the kernel's raw semantics
//! ([`crate::kernel::SetRequest`]) and every failure is a [`crate::kernel::KernelError`] that
//! names the operation and the group.

pub mod attr;
pub mod builder;
pub mod carp;
pub mod codec;
pub mod ctrl;
pub mod exchange;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub mod socket;

#[cfg(test)]
mod proptests;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub use carp::CarpNetlink;
pub use carp::{
    Answer, CarpRecord, Dump, VrrpRecord, build_get, build_set, parse_answer, parse_record,
};
pub use codec::{DecodeError, EncodeError};
pub use ctrl::{Family, McastGroup};
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub use socket::{DEFAULT_TIMEOUT, GenlSocket};
