//! The keep expression of `kiln curate` (issue 16): precedence, types,
//! comparisons, short-circuiting and the position of parse errors, checked
//! on a small schema through the library's parser and evaluator.

use kiln_data::curate::keep::{parse, Expr, Schema, Type, Value};

/// Stages `a` (keep: bool, reason: string) and `b` (keep: bool, score: number).
struct Two;

impl Schema for Two {
    fn stage(&self, name: &str) -> Result<usize, String> {
        match name {
            "a" => Ok(0),
            "b" => Ok(1),
            _ => Err(format!("no stage `{name}`")),
        }
    }
    fn field(&self, stage: usize, field: &str) -> Result<Type, String> {
        match (stage, field) {
            (_, "keep") => Ok(Type::Bool),
            (0, "reason") => Ok(Type::Str),
            (1, "score") => Ok(Type::Num),
            _ => Err(format!("no field `{field}`")),
        }
    }
}

/// A document's attributes.
struct Doc<'a> {
    a_keep: bool,
    reason: &'a str,
    b_keep: bool,
    score: f64,
}

fn eval(src: &str, d: &Doc) -> bool {
    let e = parse(src, &Two).unwrap_or_else(|e| panic!("{src}: {e:?}"));
    e.eval(&|stage, field, _ty| {
        Ok(match (stage, field) {
            (0, "keep") => Value::Bool(d.a_keep),
            (0, "reason") => Value::Str(d.reason),
            (1, "keep") => Value::Bool(d.b_keep),
            (1, "score") => Value::Num(d.score),
            _ => return Err("unknown".into()),
        })
    })
    .unwrap_or_else(|e| panic!("{src}: {e}"))
}

fn doc(a_keep: bool, b_keep: bool, score: f64) -> Doc<'static> {
    Doc {
        a_keep,
        reason: if a_keep { "" } else { "gopher_short_doc" },
        b_keep,
        score,
    }
}

#[test]
fn keep_boolean_operators_follow_precedence() {
    // `&&` binds tighter than `||`; `!` tighter than both.
    for a in [false, true] {
        for b in [false, true] {
            for c in [false, true] {
                // c is `b.score >= 0.5`.
                let d = doc(a, b, if c { 0.9 } else { 0.1 });
                assert_eq!(
                    eval("a.keep || b.keep && b.score >= 0.5", &d),
                    a || (b && c)
                );
                assert_eq!(
                    eval("(a.keep || b.keep) && b.score >= 0.5", &d),
                    (a || b) && c
                );
                assert_eq!(eval("!a.keep && b.keep", &d), !a && b);
                assert_eq!(eval("!(a.keep && b.keep)", &d), !(a && b));
                assert_eq!(eval("!!a.keep", &d), a);
                assert_eq!(eval("a.keep == b.keep", &d), a == b);
                assert_eq!(eval("a.keep != true", &d), !a);
            }
        }
    }
}

#[test]
fn keep_comparisons_on_numbers_and_strings() {
    let d = doc(false, true, 0.65);
    assert!(eval("b.score >= 0.65", &d));
    assert!(!eval("b.score > 0.65", &d));
    assert!(eval(
        "b.score <= 0.65 && b.score < 0.66 && b.score != 1",
        &d
    ));
    assert!(eval("0.6 < b.score", &d));
    assert!(eval("b.score == 6.5e-1", &d));
    assert!(eval("b.score > -1", &d));
    assert!(eval("a.reason == \"gopher_short_doc\"", &d));
    assert!(eval("a.reason != \"\"", &d));
    assert!(!eval("a.reason == \"gopher_long_doc\"", &d));
    // NaN: every ordering false, != true.
    let nan = doc(true, true, f64::NAN);
    for src in ["b.score < 1", "b.score >= 0", "b.score == b.score"] {
        assert!(!eval(src, &nan), "{src}");
    }
    assert!(eval("b.score != 0", &nan));
}

#[test]
fn keep_short_circuits() {
    // The right side would fail to read (a damaged attribute): not read.
    let e = parse("a.keep || b.keep", &Two).expect("parse");
    let lookup = |stage: usize, _: &str, _: Type| -> Result<Value<'static>, String> {
        if stage == 0 {
            Ok(Value::Bool(true))
        } else {
            Err("not read".into())
        }
    };
    assert_eq!(e.eval(&lookup), Ok(true));
    let e = parse("!a.keep && b.keep", &Two).expect("parse");
    assert_eq!(e.eval(&lookup), Ok(false));
    // And a damaged attribute that is read is an error, not a silent drop.
    let e = parse("b.keep", &Two).expect("parse");
    assert!(e.eval(&lookup).is_err());
}

#[test]
fn keep_errors_say_where_and_why() {
    let cases: [(&str, usize, &str); 14] = [
        ("", 0, "ends early"),
        ("a.keep &&", 9, "ends early"),
        ("a.keep & b.keep", 7, "use `&&`"),
        ("a.keep | b.keep", 7, "use `||`"),
        ("a.keep = b.keep", 7, "use `==`"),
        ("c.keep", 0, "no stage `c`"),
        ("a.score > 1", 2, "no field `score`"),
        ("a", 1, "needs a field"),
        ("b.score", 0, "must be true or false"),
        (
            "b.score >= \"x\"",
            0,
            "cannot compare a number with a string",
        ),
        ("a.reason < \"x\"", 0, "need numbers"),
        ("0 < b.score < 1", 12, "do not chain"),
        ("(a.keep", 7, "not closed"),
        ("a.keep b.keep", 7, "after a complete expression"),
    ];
    for (src, at, msg) in cases {
        let e = parse(src, &Two).expect_err(src);
        assert!(e.message.contains(msg), "{src:?}: {e:?}");
        assert_eq!(e.at, at, "{src:?}: {e:?}");
    }
    assert!(parse("b.keep && \"open", &Two)
        .expect_err("open string")
        .message
        .contains("not closed"));
    assert!(parse("b.score > 1.2.3", &Two)
        .expect_err("number")
        .message
        .contains("not a number"));
    assert!(parse("!b.score", &Two)
        .expect_err("not")
        .message
        .contains("needs a boolean"));
    assert!(parse("a.keep && b.score", &Two)
        .expect_err("and")
        .message
        .contains("needs a boolean"));
    // Keywords and literals alone are well-formed expressions.
    assert!(matches!(parse("true", &Two), Ok(Expr::Bool(true))));
    assert!(matches!(parse("1 == 1", &Two), Ok(Expr::Cmp(..))));
}
