//! Property: any valid event, written as JSON text, comes back from the Parquet file exactly:
//! same integers, bit-identical floats, decimals digit for digit, timestamps normalised to
//! UTC at the microsecond, strings and JSON unchanged.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use floodway::config::ParquetCompression;
use floodway::schema::decode::{BodyFormat, DecodeScratch, decode_body};
use floodway::schema::parse::parse_schema;
use floodway::schema::types::StreamSchema;
use floodway::schema::values::{
    MAX_TIMESTAMP_MICROS, MIN_TIMESTAMP_MICROS, civil_from_days, format_decimal, format_rfc3339_micros,
};
use floodway::sinks::parquet::writer::OpenFile;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use proptest::prelude::*;

const SCHEMA: &str = r#"{"fields":[
  {"name":"ts","type":"timestamp"},
  {"name":"flag","type":"bool"},
  {"name":"small","type":"int32"},
  {"name":"big","type":"int64"},
  {"name":"ratio","type":"float64"},
  {"name":"text","type":"string"},
  {"name":"level","type":"enum","values":["debug","info","warn","error"]},
  {"name":"day","type":"date"},
  {"name":"amount","type":"decimal","precision":38,"scale":10},
  {"name":"price","type":"decimal","precision":18,"scale":4},
  {"name":"id","type":"uuid"},
  {"name":"attrs","type":"json"},
  {"name":"note","type":"string","nullable":true}
],"time_field":"ts"}"#;

const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
const MINUTES_PER_DAY: i64 = 24 * 60;

#[derive(Debug, Clone)]
struct Event {
    ts_micros: i64,
    /// Offset the timestamp is written with, in minutes east of UTC.
    offset_minutes: i64,
    flag: bool,
    small: i32,
    big: i64,
    ratio: f64,
    text: String,
    level: usize,
    day: i32,
    amount: i128,
    amount_as_string: bool,
    price: i64,
    id: [u8; 16],
    id_upper: bool,
    attrs: serde_json::Value,
    /// None: absent; Some(None): null; Some(Some(s)): a string.
    note: Option<Option<String>>,
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event() -> impl Strategy<Value = Event> {
    let decimal_38 = 10i128.pow(38) - 1;
    let price_max = 10i64.pow(18) - 1;
    let days = (-719_528i32)..=2_932_896; // 0000-01-01 ..= 9999-12-31
    let finite = any::<f64>().prop_filter("finite", |f| f.is_finite());
    (
        (MIN_TIMESTAMP_MICROS + 14 * 3_600_000_000)..=(MAX_TIMESTAMP_MICROS - 14 * 3_600_000_000),
        -(14 * 60)..=(14 * 60i64),
        any::<bool>(),
        any::<i32>(),
        any::<i64>(),
        finite,
        "\\PC{0,40}",
        0..LEVELS.len(),
        days,
    )
        .prop_flat_map(move |(ts_micros, offset_minutes, flag, small, big, ratio, text, level, day)| {
            (
                (-decimal_38)..=decimal_38,
                any::<bool>(),
                (-price_max)..=price_max,
                any::<[u8; 16]>(),
                any::<bool>(),
                // A non-nullable field takes any JSON value but null (SPEC §3, `nullable`).
                json_value().prop_filter("not null", |v| !v.is_null()),
                prop::option::of(prop::option::of("\\PC{0,12}")),
            )
                .prop_map(move |(amount, amount_as_string, price, id, id_upper, attrs, note)| {
                    Event {
                        ts_micros,
                        offset_minutes,
                        flag,
                        small,
                        big,
                        ratio,
                        text: text.clone(),
                        level,
                        day,
                        amount,
                        amount_as_string,
                        price,
                        id,
                        id_upper,
                        attrs,
                        note,
                    }
                })
        })
}

/// The RFC 3339 text of `micros` as seen from a zone `offset_minutes` east of UTC.
fn timestamp_text(micros: i64, offset_minutes: i64) -> String {
    let mut local = String::new();
    format_rfc3339_micros(micros + offset_minutes * 60_000_000, &mut local);
    assert!(offset_minutes.abs() < MINUTES_PER_DAY);
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let offset = offset_minutes.abs();
    local.pop(); // the 'Z'
    format!("{local}{sign}{:02}:{:02}", offset / 60, offset % 60)
}

fn uuid_text(bytes: &[u8; 16], upper: bool) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let text = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
    if upper { text.to_uppercase() } else { text }
}

fn to_json_line(event: &Event) -> String {
    let mut amount = String::new();
    format_decimal(event.amount, 10, &mut amount);
    let amount = if event.amount_as_string { format!("\"{amount}\"") } else { amount };
    let mut price = String::new();
    format_decimal(i128::from(event.price), 4, &mut price);
    let (year, month, day) = civil_from_days(i64::from(event.day));
    let note = match &event.note {
        None => String::new(),
        Some(None) => ",\"note\":null".to_owned(),
        Some(Some(text)) => format!(",\"note\":{}", serde_json::to_string(text).unwrap()),
    };
    format!(
        "{{\"ts\":\"{}\",\"flag\":{},\"small\":{},\"big\":{},\"ratio\":{},\"text\":{},\"level\":\"{}\",\
         \"day\":\"{year:04}-{month:02}-{day:02}\",\"amount\":{amount},\"price\":{price},\"id\":\"{}\",\"attrs\":{}{note}}}",
        timestamp_text(event.ts_micros, event.offset_minutes),
        event.flag,
        event.small,
        event.big,
        event.ratio,
        serde_json::to_string(&event.text).unwrap(),
        LEVELS[event.level],
        uuid_text(&event.id, event.id_upper),
        event.attrs,
    )
}

fn write_and_read_back(schema: &StreamSchema, records: &RecordBatch) -> RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    let mut file = OpenFile::create(
        dir.path().to_path_buf(),
        "part.parquet",
        "roundtrip",
        schema,
        ParquetCompression::Zstd { level: 1 },
    )
    .unwrap();
    file.write(records).unwrap();
    let finished = file.finish().unwrap();
    assert_eq!(finished.rows as usize, records.num_rows());
    let file = std::fs::File::open(finished.in_progress).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow_select::concat::concat_batches(&schema.arrow, &batches).unwrap()
}

fn check_row(back: &RecordBatch, row: usize, event: &Event) {
    let column = |name: &str| back.column_by_name(name).unwrap().clone();
    assert_eq!(column("ts").as_primitive::<TimestampMicrosecondType>().value(row), event.ts_micros);
    assert_eq!(column("flag").as_boolean().value(row), event.flag);
    assert_eq!(column("small").as_primitive::<Int32Type>().value(row), event.small);
    assert_eq!(column("big").as_primitive::<Int64Type>().value(row), event.big);
    let ratio = column("ratio").as_primitive::<Float64Type>().value(row);
    assert_eq!(ratio.to_bits(), event.ratio.to_bits(), "{ratio} vs {}", event.ratio);
    assert_eq!(column("text").as_string::<i32>().value(row), event.text);
    assert_eq!(column("level").as_string::<i32>().value(row), LEVELS[event.level]);
    assert_eq!(column("day").as_primitive::<Date32Type>().value(row), event.day);
    assert_eq!(column("amount").as_primitive::<Decimal128Type>().value(row), event.amount);
    assert_eq!(column("price").as_primitive::<Decimal128Type>().value(row), i128::from(event.price));
    assert_eq!(column("id").as_fixed_size_binary().value(row), event.id);
    let attrs: serde_json::Value =
        serde_json::from_str(column("attrs").as_string::<i32>().value(row)).unwrap();
    assert_eq!(attrs, event.attrs);
    let note = column("note");
    match &event.note {
        Some(Some(text)) => assert_eq!(note.as_string::<i32>().value(row), text),
        _ => assert!(note.is_null(row)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_events_round_trip_exactly_through_parquet(events in prop::collection::vec(event(), 1..24)) {
        let schema = Arc::new(parse_schema(SCHEMA.as_bytes(), 1).unwrap());
        let body: String = events.iter().map(|e| to_json_line(e) + "\n").collect();
        let decoded = decode_body(&schema, body.as_bytes(), BodyFormat::Ndjson, &mut DecodeScratch::default()).unwrap();
        prop_assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
        prop_assert_eq!(decoded.accepted(), events.len() as u64);
        let back = write_and_read_back(&schema, &decoded.records);
        for (row, event) in events.iter().enumerate() {
            check_row(&back, row, event);
        }
    }
}
