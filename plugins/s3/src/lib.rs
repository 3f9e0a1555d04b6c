//! The `s3` destination: generations kept in an S3 bucket, on AWS or any
//! S3-compatible server.
//!
//! - Transport is wasi:http: the runner makes the connections and does TLS,
//!   and lets requests reach only the host:port of the `endpoint` setting
//!   (declared with the http-url role).
//! - Requests are signed with AWS Signature Version 4 by aws-sigv4; rusty-s3
//!   shapes each action's URL and XML ([`request`]).
//! - Upload: PutObject up to `part_size`, above it a multipart upload with
//!   `parallel_parts` parts in flight, all fed from one loop polling their
//!   wasi:io pollables ([`upload`]); checksums on every part and on the
//!   object; aborted on any failure, and uploads a killed or stopped run
//!   left behind are aborted by the next upload of the job ([`orphans`]).
//! - Fetch streams GetObject in fixed chunks (resuming with Range), a
//!   ranged fetch asks for just its bytes with Range ([`range`]), list
//!   follows ListObjectsV2 continuation tokens, remove is DeleteObject
//!   ([`client`]); in a versioned bucket every version, or a warning
//!   ([`versions`]).
//! - 500/503/SlowDown and dropped connections are retried with backoff
//!   within a bound, then reported `transient`; credentials and permission
//!   problems are `config` errors that name the setting to check ([`fault`]).
//!
//! The protocol modules are plain Rust and tested natively; only [`http`]
//! needs the wasm32-wasip2 host.

pub mod client;
pub mod fault;
pub mod http;
pub mod orphans;
pub mod range;
pub mod request;
pub mod retry;
pub mod settings;
pub mod upload;
pub mod versions;

use offsite_sdk::*;

use crate::client::Client;
use crate::request::S3;
use crate::settings::Config;

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct S3Destination {
    client: Client,
    /// Asked on the first removal of this instance (one run).
    versioning: Option<versions::Versioning>,
}

impl Destination for S3Destination {
    fn describe() -> PluginInfo {
        settings::describe()
    }

    fn configure(s: &Settings) -> Result<Self, Error> {
        let cfg = Config::from_settings(s)?;
        Ok(S3Destination {
            client: Client { s3: S3::new(cfg)? },
            versioning: None,
        })
    }

    fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> {
        self.client.explain(upload::upload(&self.client, req, data))
    }

    fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error> {
        use versions::Versioning;
        let key = self.client.s3.cfg.key(&req.name)?;
        let versioning = match self.versioning {
            Some(v) => v,
            None => {
                let v = self.client.versioning().unwrap_or_else(|e| {
                    log(
                        LogLevel::Debug,
                        &format!("s3: cannot tell whether the bucket is versioned: {e:?}"),
                    );
                    Versioning::Off
                });
                if v != Versioning::Off && !self.client.s3.cfg.remove_versions {
                    // Once per instance, i.e. per run and destination.
                    warn(&format!(
                        "bucket {} has versioning {}: rotation's DeleteObject only adds a delete marker, the old versions keep their space; set `remove_versions` = true to delete the versions offsite wrote, or expire noncurrent versions with a lifecycle rule",
                        self.client.s3.cfg.bucket,
                        if v == Versioning::Enabled {
                            "enabled"
                        } else {
                            "suspended"
                        }
                    ));
                }
                self.versioning = Some(v);
                v
            }
        };
        if versioning != Versioning::Off && self.client.s3.cfg.remove_versions {
            let n = self.client.explain(self.client.remove_versions(&key))?;
            if n == 0 {
                return Err(Error::NotFound(format!(
                    "{key}: no version of it in the bucket"
                )));
            }
            log(
                LogLevel::Info,
                &format!("s3: removed {key}: {n} versions and delete markers"),
            );
            return Ok(());
        }
        self.client.explain(self.client.remove(&key))
    }

    fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error> {
        let key = self.client.s3.cfg.key(&req.name)?;
        let n = self.client.explain(self.client.fetch(&key, sink))?;
        Ok(Fetched::Streamed(n))
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        self.client.explain(self.client.list(prefix))
    }

    fn fetch_range(&mut self, req: &RangeRequest, sink: &mut Writer) -> Result<u64, Error> {
        let key = self.client.s3.cfg.key(&req.name)?;
        self.client
            .explain(self.client.fetch_range(&key, req.offset, req.length, sink))
    }
}

// Native builds are for the unit tests; export names such as
// `offsite:plugin/destination-api@0.2.0#upload` only link into a component.
#[cfg(target_arch = "wasm32")]
export_destination!(S3Destination);
