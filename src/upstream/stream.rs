//! A connection to an upstream: plain TCP or TLS over TCP.

use std::io;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio_rustls::ClientTlsStream;

pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl AsyncReadRent for UpstreamStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(stream) => stream.read(buf).await,
            UpstreamStream::Tls(stream) => stream.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(stream) => stream.readv(buf).await,
            UpstreamStream::Tls(stream) => stream.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpstreamStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(stream) => stream.write(buf).await,
            UpstreamStream::Tls(stream) => stream.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(stream) => stream.writev(buf).await,
            UpstreamStream::Tls(stream) => stream.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            UpstreamStream::Plain(stream) => stream.flush().await,
            UpstreamStream::Tls(stream) => stream.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            UpstreamStream::Plain(stream) => stream.shutdown().await,
            UpstreamStream::Tls(stream) => stream.shutdown().await,
        }
    }
}
