//! `DeviceStore`: the line's own device record (its private keys and account, sealed), one per
//! line.
//!
//! The record is the library's serde form of `Device` (JSON), plus `device_props`, the one part it
//! does not serialize (protobuf, kept so a device still pairing reloads with the same props).
//! `client_profile` is runtime-only: the library sets it before every connect.

use super::{database, fenced, malformed, PgSessionStore};
use async_trait::async_trait;
use std::sync::Arc;
use wacore::stats::StorageResourceReport;
use wacore::store::error::Result;
use wacore::store::traits::DeviceStore;
use wacore::store::Device;
use waproto::buffa::Message as _;
use waproto::whatsapp::DeviceProps;

const DEVICES: &str = "wa_devices";

/// A line has one device; its id, as `create` reports it.
const DEVICE_ID: i32 = 1;

impl PgSessionStore {
    /// Write the device record: replace it, or (`replace` false) only create it if there is none.
    async fn put_device(&self, device: &Device, replace: bool) -> Result<()> {
        let record = serde_json::to_vec(device).map_err(|e| malformed(DEVICES, e))?;
        let sealed = self.seal(DEVICES, &[], &record);
        let props = waproto::codec::device_props_to_vec(&device.device_props);
        let sql = if replace {
            fenced!(
                "INSERT INTO wa_devices (line_id, device_sealed, device_props) SELECT $1, $4, $5 FROM lease \
                 ON CONFLICT (line_id) DO UPDATE SET device_sealed = EXCLUDED.device_sealed, device_props = EXCLUDED.device_props"
            )
        } else {
            fenced!(
                "INSERT INTO wa_devices (line_id, device_sealed, device_props) SELECT $1, $4, $5 FROM lease \
                 ON CONFLICT (line_id) DO NOTHING"
            )
        };
        self.write(self.fenced(sql).bind(sealed).bind(props)).await?;
        Ok(())
    }
}

#[async_trait]
impl DeviceStore for PgSessionStore {
    async fn save(&self, device: &Device) -> Result<()> {
        self.put_device(device, true).await
    }

    async fn load(&self) -> Result<Option<Device>> {
        let row: Option<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT device_sealed, device_props FROM wa_devices WHERE line_id = $1")
                .bind(self.line_id())
                .fetch_optional(&self.pool)
                .await
                .map_err(database)?;
        let Some((sealed, props)) = row else { return Ok(None) };
        let record = self.open(DEVICES, &[], &sealed)?;
        let mut device: Device = serde_json::from_slice(&record).map_err(|e| malformed(DEVICES, e))?;
        device.device_props = Arc::new(DeviceProps::decode_from_slice(&props).map_err(|e| malformed(DEVICES, e))?);
        Ok(Some(device))
    }

    async fn exists(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM wa_devices WHERE line_id = $1)")
            .bind(self.line_id())
            .fetch_one(&self.pool)
            .await
            .map_err(database)
    }

    /// A fresh device (new keys) unless the line has one already, as the reference store does.
    async fn create(&self) -> Result<i32> {
        self.put_device(&Device::new(), false).await?;
        Ok(DEVICE_ID)
    }

    /// Nothing of the session is held in this process.
    async fn resource_report(&self) -> StorageResourceReport {
        StorageResourceReport { memory_bytes: Some(0), ..StorageResourceReport::default() }
    }
}
