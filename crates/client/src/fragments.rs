//! Listing a journal's fragments through a broker (`ListFragments`), all pages.

use std::time::Duration;

use folio_protocol::{Fragment, FragmentsRequest};

use crate::connect::Client;
use crate::{Error, Result};

/// Which fragments to list, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FragmentsFilter {
    /// Only fragments modified at or after this Unix time (seconds); 0 is no bound.
    pub begin_mod_time: i64,
    /// Only fragments modified before this Unix time (seconds); 0 is no bound.
    pub end_mod_time: i64,
    /// Fragments per page; 0 lets the broker choose (Gazette: 1000).
    pub page_limit: i32,
    /// Ask for signed GET URLs valid this long; `None` lists without URLs.
    pub signature_ttl: Option<Duration>,
    /// Ask the broker not to proxy the request to a member of the journal's route.
    pub do_not_proxy: bool,
}

/// Every fragment of `journal` the broker's index holds that passes `filter`, in offset
/// order, with its signed URL when `filter.signature_ttl` asked for one.
///
/// Pages are followed by `next_page_token` until the broker answers 0. Each page is one
/// attempt: an error (check [`Error::is_retryable`]) ends the listing.
///
/// ```no_run
/// # async fn example() -> folio_client::Result<()> {
/// use folio_client::{FragmentsFilter, connect_lazy, list_fragments};
///
/// let mut client = connect_lazy("http://127.0.0.1:8080")?;
/// for (fragment, url) in list_fragments(&mut client, "acme/clicks/part-000", &FragmentsFilter::default()).await? {
///     println!("[{}, {}) in {} {url:?}", fragment.begin, fragment.end, fragment.backing_store);
/// }
/// # Ok(())
/// # }
/// ```
pub async fn list_fragments(
    client: &mut Client,
    journal: &str,
    filter: &FragmentsFilter,
) -> Result<Vec<(Fragment, Option<String>)>> {
    Error::check_journal(journal)?;
    if filter.page_limit < 0 {
        return Err(Error::InvalidArgument {
            what: "page_limit",
            reason: format!("{} is negative", filter.page_limit),
        });
    }
    let signature_ttl = filter.signature_ttl.map(|ttl| prost_types::Duration {
        seconds: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        nanos: ttl.subsec_nanos() as i32,
    });
    let mut out = Vec::new();
    let mut token = 0;
    loop {
        let request = FragmentsRequest {
            journal: journal.to_owned(),
            begin_mod_time: filter.begin_mod_time,
            end_mod_time: filter.end_mod_time,
            next_page_token: token,
            page_limit: filter.page_limit,
            signature_ttl,
            do_not_proxy: filter.do_not_proxy,
            ..FragmentsRequest::default()
        };
        let response = client
            .list_fragments(request)
            .await
            .map_err(|status| Error::rpc("list_fragments", journal, status))?
            .into_inner();
        Error::check_status("list_fragments", journal, response.status, String::new)?;
        for listed in response.fragments {
            let fragment = listed.spec.ok_or_else(|| {
                Error::protocol("list_fragments", journal, "a listed fragment has no spec")
            })?;
            let url = (!listed.signed_url.is_empty()).then_some(listed.signed_url);
            out.push((fragment, url));
        }
        match response.next_page_token {
            0 => return Ok(out),
            // The token is an offset past the page; one that does not advance would
            // page forever.
            next if next <= token => {
                return Err(Error::protocol(
                    "list_fragments",
                    journal,
                    format!("next_page_token {next} does not advance past {token}"),
                ));
            }
            next => token = next,
        }
    }
}
