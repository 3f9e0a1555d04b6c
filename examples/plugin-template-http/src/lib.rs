//! A destination over HTTP: a WebDAV collection (Nextcloud, a NAS, Apache
//! mod_dav, nginx dav, rclone serve webdav...). Objects live directly in
//! the collection the `url` setting names.
//!
//! - upload: `PUT` to `.NAME.part` (the runner's stream spliced into the
//!   body), then `MOVE` onto `NAME` with `Overwrite: T`: a name is never
//!   visible with partial content. A failed upload deletes its `.part`.
//! - fetch: `GET`, the answer spliced into the runner's stream.
//! - remove: `DELETE`; list: `PROPFIND` with `Depth: 1`.

mod multistatus;

use offsite_sdk::http::{self, Request, Response};
use offsite_sdk::*;

struct WebDav {
    /// The collection's URL, ending in `/`.
    base: String,
    /// The collection's path (as the server writes `href`s), ending in `/`.
    base_path: String,
    auth: Option<(String, String)>,
}

impl WebDav {
    fn url(&self, name: &str) -> String {
        format!("{}{}", self.base, http::encode_path(name))
    }

    /// A request with the credentials, if any.
    fn request(&self, method: &str, name: &str) -> Request {
        let r = Request::new(method, &self.url(name));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, p),
            None => r,
        }
    }

    /// Send a body-less request and require a 2xx answer.
    fn call(&self, method: &str, name: &str, doing: &str) -> Result<Response, Error> {
        let mut r = self.request(method, name).send()?;
        r.ok_or_error(doing)?;
        Ok(r)
    }
}

impl Destination for WebDav {
    fn describe() -> PluginInfo {
        PluginInfo::destination(
            "template-http",
            env!("CARGO_PKG_VERSION"),
            "WebDAV collection over HTTP(S)",
        )
        .setting(
            Setting::new("url", "http(s):// URL of an existing WebDAV collection")
                .required()
                .role(SettingRole::HttpUrl),
        )
        .setting(Setting::new(
            "user",
            "user name for HTTP basic authentication",
        ))
        .setting(Setting::new("password", "password for basic authentication").secret())
        .settings(http::tls_settings())
    }

    fn configure(s: &Settings) -> Result<Self, Error> {
        let url = s.required("url")?;
        let (_, _, path) = http::split_url(url)?;
        let slash = |v: &str| {
            if v.ends_with('/') {
                v.to_string()
            } else {
                format!("{v}/")
            }
        };
        let auth = match (s.get("user"), s.get("password")) {
            (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "set both `user` and `password`, or neither".into(),
                ));
            }
        };
        Ok(WebDav {
            base: slash(url),
            base_path: slash(&http::decode_path(path.split('?').next().unwrap_or("/"))),
            auth,
        })
    }

    fn upload(&mut self, req: &UploadRequest, data: &mut Reader) -> Result<(), Error> {
        let part = format!(".{}.part", req.name);
        let put = self
            .request("PUT", &part)
            .header("content-type", "application/octet-stream")
            .send_reader(data, req.size)
            .and_then(|mut r| r.ok_or_error(&format!("upload {}", req.name)));
        let moved = put.and_then(|()| {
            let mut r = self
                .request("MOVE", &part)
                .header("destination", self.url(&req.name))
                .header("overwrite", "T")
                .send()?;
            r.ok_or_error(&format!("rename {part} to {}", req.name))
        });
        if moved.is_err() {
            // Best effort: a failed upload leaves nothing behind. A server
            // may still be taking a cut PUT after the connection closed (it
            // keeps what arrived), so delete again a moment later.
            let _ = self.request("DELETE", &part).send();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let _ = self.request("DELETE", &part).send();
        }
        moved
    }

    fn remove(&mut self, req: &RemoveRequest) -> Result<(), Error> {
        self.call("DELETE", &req.name, &format!("remove {}", req.name))?;
        Ok(())
    }

    fn fetch(&mut self, req: &FetchRequest, sink: &mut Writer) -> Result<Fetched, Error> {
        let mut r = self.call("GET", &req.name, &format!("fetch {}", req.name))?;
        Ok(Fetched::Streamed(r.copy_to(sink)?))
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, Error> {
        let mut r = self
            .request("PROPFIND", "")
            .header("depth", "1")
            .header("content-type", "application/xml")
            .send_bytes(multistatus::PROPFIND.as_bytes())?;
        r.ok_or_error("list")?;
        let xml = r.text(64 << 20)?;
        Ok(multistatus::parse(&xml, &self.base_path)
            .into_iter()
            .filter(|o| o.name.starts_with(prefix) && !o.name.starts_with('.'))
            .collect())
    }
}

export_destination!(WebDav);
