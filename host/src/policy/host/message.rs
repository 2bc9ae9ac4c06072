//! The host side of `sluice:policy/message`: the message resource's
//! methods, each bounded as the contract says.

use wasmtime::component::Resource;

use crate::policy::bindings::sluice::policy::{message, types};
use crate::policy::message::MessageResource;

use super::*;

impl message::HostMessage for HostState {
    fn size(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<u32> {
        Ok(self.message(&m)?.size())
    }

    fn header(
        &mut self,
        m: Resource<MessageResource>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(self.message(&m)?.header(&name))
    }

    fn headers(
        &mut self,
        m: Resource<MessageResource>,
        max: u32,
    ) -> wasmtime::Result<Vec<types::Header>> {
        Ok(self
            .message(&m)?
            .headers(max)
            .map(|(name, value)| types::Header {
                name: name.to_string(),
                value,
            })
            .collect())
    }

    fn subject(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<Option<String>> {
        Ok(self.message(&m)?.subject())
    }

    fn from(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<Vec<String>> {
        Ok(self.message(&m)?.from())
    }

    fn to(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<Vec<String>> {
        Ok(self.message(&m)?.to())
    }

    fn parts(
        &mut self,
        m: Resource<MessageResource>,
        max: u32,
    ) -> wasmtime::Result<Vec<message::PartInfo>> {
        Ok(self
            .message(&m)?
            .parts(max)
            .map(|p| message::PartInfo {
                content_type: p.content_type.clone(),
                filename: p.filename.clone(),
                size: p.size,
                is_attachment: p.is_attachment,
            })
            .collect())
    }

    fn text(&mut self, m: Resource<MessageResource>, max_bytes: u32) -> wasmtime::Result<String> {
        Ok(self.message(&m)?.text(max_bytes))
    }

    fn raw(
        &mut self,
        m: Resource<MessageResource>,
        offset: u32,
        len: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        Ok(self.message(&m)?.raw(offset, len))
    }

    fn drop(&mut self, m: Resource<MessageResource>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}
