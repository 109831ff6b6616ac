//! Byte streams that are TCP or TLS over TCP, on both sides of the proxy. Plain TCP keeps
//! tokio's lock-free `into_split` halves for the client; only TLS pays for a shared lock.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

type ClientTls = tokio_rustls::server::TlsStream<TcpStream>;
type ServerTls = tokio_rustls::client::TlsStream<TcpStream>;

/// `AsyncRead` by whichever variant holds the stream.
macro_rules! delegate_read {
    ($ty:ident { $($(#[$m:meta])* $variant:ident),+ }) => {
        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                #[allow(unreachable_patterns)]
                match self.get_mut() {
                    $($(#[$m])* $ty::$variant(s) => Pin::new(s).poll_read(cx, buf),)+
                    _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }
        }
    };
}

/// `AsyncWrite` by whichever variant holds the stream.
macro_rules! delegate_write {
    ($ty:ident { $($(#[$m:meta])* $variant:ident),+ }) => {
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                #[allow(unreachable_patterns)]
                match self.get_mut() {
                    $($(#[$m])* $ty::$variant(s) => Pin::new(s).poll_write(cx, buf),)+
                    _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                #[allow(unreachable_patterns)]
                match self.get_mut() {
                    $($(#[$m])* $ty::$variant(s) => Pin::new(s).poll_flush(cx),)+
                    _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                #[allow(unreachable_patterns)]
                match self.get_mut() {
                    $($(#[$m])* $ty::$variant(s) => Pin::new(s).poll_shutdown(cx),)+
                    _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                }
            }
        }
    };
}

/// A client's connection to pgroute.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<ClientTls>),
    /// Between giving the TCP stream to a TLS handshake and getting it back (gone if the
    /// handshake failed): reads and writes fail.
    Closed,
    /// In memory, for the session's unit tests.
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

delegate_read!(ClientStream {
    Plain,
    Tls,
    #[cfg(test)]
    Memory
});
delegate_write!(ClientStream {
    Plain,
    Tls,
    #[cfg(test)]
    Memory
});

impl ClientStream {
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            ClientStream::Plain(s) => s.peer_addr().ok(),
            ClientStream::Tls(s) => s.get_ref().0.peer_addr().ok(),
            ClientStream::Closed => None,
            #[cfg(test)]
            ClientStream::Memory(_) => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The TCP stream of a plain connection, for a TLS handshake (`Closed` is left).
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, ClientStream::Closed) {
            ClientStream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Read and write halves for the session loop.
    pub fn into_split(self) -> (ClientRead, ClientWrite) {
        match self {
            ClientStream::Plain(s) => {
                let (r, w) = s.into_split();
                (ClientRead::Plain(r), ClientWrite::Plain(w))
            }
            ClientStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ClientRead::Tls(r), ClientWrite::Tls(w))
            }
            ClientStream::Closed => (ClientRead::Closed, ClientWrite::Closed),
            #[cfg(test)]
            ClientStream::Memory(s) => {
                let (r, w) = tokio::io::split(s);
                (ClientRead::Memory(r), ClientWrite::Memory(w))
            }
        }
    }
}

pub enum ClientRead {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<ClientTls>),
    Closed,
    #[cfg(test)]
    Memory(tokio::io::ReadHalf<tokio::io::DuplexStream>),
}

delegate_read!(ClientRead {
    Plain,
    Tls,
    #[cfg(test)]
    Memory
});

impl ClientRead {
    /// Reads into `buf`, which has no room, giving it `chunk` bytes of room only once the
    /// client has sent something: an idle client holds no buffer. Readiness alone is no
    /// proof (tokio keeps it set until a read finds nothing, and the login's reads never
    /// do), so plain TCP reads the first bytes into a small stack buffer. TLS cannot tell
    /// without reading: it gets the room at once.
    pub async fn read_into_empty(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        match self {
            ClientRead::Plain(r) => loop {
                r.readable().await?;
                let mut first = [0u8; 512];
                match r.try_read(&mut first) {
                    Ok(n) => {
                        buf.reserve(chunk.max(n));
                        buf.extend_from_slice(&first[..n]);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            },
            ClientRead::Tls(_) => {
                buf.reserve(chunk);
                self.read_buf(buf).await
            }
            #[cfg(test)]
            ClientRead::Memory(_) => {
                buf.reserve(chunk);
                self.read_buf(buf).await
            }
            ClientRead::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

pub enum ClientWrite {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<ClientTls>),
    Closed,
    #[cfg(test)]
    Memory(tokio::io::WriteHalf<tokio::io::DuplexStream>),
}

delegate_write!(ClientWrite {
    Plain,
    Tls,
    #[cfg(test)]
    Memory
});

/// pgroute's connection to a PostgreSQL server.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<ServerTls>),
    /// In memory, to a scripted server (`backend::fake`), for the session's unit tests.
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

delegate_read!(ServerStream {
    Plain,
    Tls,
    #[cfg(test)]
    Memory
});
delegate_write!(ServerStream {
    Plain,
    Tls,
    #[cfg(test)]
    Memory
});

impl ServerStream {
    /// The `tls-server-end-point` data of the server's certificate, over TLS.
    pub fn end_point(&self) -> Option<Vec<u8>> {
        match self {
            ServerStream::Plain(_) => None,
            ServerStream::Tls(s) => s.get_ref().1.peer_certificates()?.first().map(|c| super::end_point_hash(c)),
            #[cfg(test)]
            ServerStream::Memory(_) => None,
        }
    }

    /// The TCP socket underneath (to see whether an idle connection was closed).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ServerStream::Plain(s) => Some(s),
            ServerStream::Tls(s) => Some(s.get_ref().0),
            #[cfg(test)]
            ServerStream::Memory(_) => None,
        }
    }
}
