//! `list_fragments` against a scripted broker: paging and signed URLs.

use std::time::Duration;

use folio_client::{Error, FragmentsFilter, Status, list_fragments};
use folio_protocol::{Fragment, FragmentsResponse, fragments_response};

use crate::JOURNAL;
use crate::broker::{FakeBroker, serve};

fn page(spans: &[(i64, i64)], signed: bool, next_page_token: i64) -> FragmentsResponse {
    FragmentsResponse {
        status: Status::Ok as i32,
        fragments: spans
            .iter()
            .map(|&(begin, end)| fragments_response::Fragment {
                spec: Some(Fragment {
                    journal: JOURNAL.into(),
                    begin,
                    end,
                    ..Fragment::default()
                }),
                signed_url: if signed {
                    format!("https://bucket/{begin}?sig=x")
                } else {
                    String::new()
                },
            })
            .collect(),
        next_page_token,
        ..FragmentsResponse::default()
    }
}

#[tokio::test]
async fn follows_pages_until_the_token_is_zero() {
    let (broker, mut client, _) = serve(FakeBroker::listing(|request| {
        let signed = request.signature_ttl.is_some();
        match request.next_page_token {
            0 => page(&[(0, 10), (10, 20)], signed, 20),
            20 => page(&[(20, 30), (30, 40)], signed, 40),
            _ => page(&[(40, 50)], signed, 0),
        }
    }))
    .await;
    let filter = FragmentsFilter {
        page_limit: 2,
        begin_mod_time: 100,
        signature_ttl: Some(Duration::from_secs(90)),
        ..FragmentsFilter::default()
    };
    let listed = list_fragments(&mut client, JOURNAL, &filter)
        .await
        .expect("list");
    let spans: Vec<(i64, i64)> = listed.iter().map(|(f, _)| (f.begin, f.end)).collect();
    assert_eq!(spans, [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]);
    assert_eq!(listed[2].1.as_deref(), Some("https://bucket/20?sig=x"));

    let requests = broker.fragment_listings.lock().expect("lock").clone();
    let tokens: Vec<i64> = requests.iter().map(|r| r.next_page_token).collect();
    assert_eq!(tokens, [0, 20, 40]);
    assert!(
        requests
            .iter()
            .all(|r| r.page_limit == 2 && r.begin_mod_time == 100)
    );
    assert_eq!(requests[0].signature_ttl.map(|d| d.seconds), Some(90));

    let unsigned = list_fragments(&mut client, JOURNAL, &FragmentsFilter::default())
        .await
        .expect("list");
    assert!(unsigned.iter().all(|(_, url)| url.is_none()));
}

#[tokio::test]
async fn statuses_and_stuck_tokens_are_errors() {
    let (_broker, mut client, _) = serve(FakeBroker::listing(|_| FragmentsResponse {
        status: Status::JournalNotFound as i32,
        ..FragmentsResponse::default()
    }))
    .await;
    let err = list_fragments(&mut client, JOURNAL, &FragmentsFilter::default())
        .await
        .expect_err("not found");
    assert_eq!(err.status(), Some(Status::JournalNotFound));

    let (_broker, mut client, _) = serve(FakeBroker::listing(|_| page(&[(0, 10)], false, 5))).await;
    let err = list_fragments(&mut client, JOURNAL, &FragmentsFilter::default())
        .await
        .expect_err("stuck");
    assert!(matches!(err, Error::Protocol { .. }), "{err}");
}
