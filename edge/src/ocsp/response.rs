//! RFC 6960: the request for one certificate's status, and the checks of the answer before
//! it may be stapled (the signature and the signer's authority, the certificate it is about,
//! its status and its validity in time).

use crate::der::{self, Item, Malformed, Reader};
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;

/// Why a response is not stapled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OcspError {
    #[error(
        "the certificate names no OCSP responder (no OCSP URL in its Authority Information Access)"
    )]
    NoResponder,
    #[error("the certificate file has no issuer certificate after the leaf: a response cannot be verified")]
    NoIssuer,
    #[error("a certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("the responder answered with status {0} ({1}), not successful")]
    Unsuccessful(u8, &'static str),
    #[error("{0}")]
    Malformed(#[from] Malformed),
    #[error("the response is not a basic OCSP response")]
    NotBasic,
    #[error("the response is not about this certificate")]
    OtherCertificate,
    #[error("the response's signature does not verify with the issuer's key or an OCSP signer it issued")]
    BadSignature,
    #[error("the signature algorithm of the response is not supported")]
    UnsupportedAlgorithm,
    #[error("the response is not yet valid (thisUpdate is in the future)")]
    NotYetValid,
    #[error("the response has expired (nextUpdate has passed)")]
    Expired,
    #[error("the certificate is revoked")]
    Revoked,
    #[error("the responder does not know the certificate (status unknown)")]
    Unknown,
    #[error("{0}")]
    Fetch(String),
}

/// What to ask about one certificate, and how to recognise the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The responder named in the leaf's Authority Information Access, if any.
    pub url: Option<String>,
    /// The DER `OCSPRequest`.
    pub request: Vec<u8>,
    serial: Vec<u8>,
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    issuer: Vec<u8>,
}

/// SHA-1, the hash of RFC 6960's CertID that every responder answers.
const SHA1_OID: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// id-pkix-ocsp-basic.
const BASIC_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// A verified response, ready to staple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Good {
    pub der: Vec<u8>,
    /// Unix seconds.
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// When it was checked (fetched or read).
    pub fetched: i64,
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

fn parse(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, OcspError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| OcspError::Certificate(e.to_string()))
}

impl Query {
    /// The request for `leaf`, issued by `issuer` (both DER).
    pub fn new(leaf: &[u8], issuer: &[u8]) -> Result<Query, OcspError> {
        let leaf_cert = parse(leaf)?;
        let issuer_cert = parse(issuer)?;
        let url = leaf_cert
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityInfoAccess(aia) => aia
                    .accessdescs
                    .iter()
                    .filter(|d| d.access_method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP)
                    .find_map(|d| match &d.access_location {
                        GeneralName::URI(uri) => Some(uri.to_string()),
                        _ => None,
                    }),
                _ => None,
            });
        let serial = leaf_cert.raw_serial().to_vec();
        let name_hash = sha1(leaf_cert.tbs_certificate.issuer.as_raw());
        let key_hash = sha1(&issuer_cert.public_key().subject_public_key.data);
        let algorithm = der::write(
            der::SEQUENCE,
            &[der::write(der::OID, SHA1_OID), der::write(der::NULL, &[])].concat(),
        );
        let cert_id = der::write(
            der::SEQUENCE,
            &[
                algorithm,
                der::write(der::OCTET_STRING, &name_hash),
                der::write(der::OCTET_STRING, &key_hash),
                der::write(der::INTEGER, &serial),
            ]
            .concat(),
        );
        let request = der::write(der::SEQUENCE, &cert_id);
        let request_list = der::write(der::SEQUENCE, &request);
        let tbs = der::write(der::SEQUENCE, &request_list);
        Ok(Query {
            url,
            request: der::write(der::SEQUENCE, &tbs),
            serial,
            name_hash,
            key_hash,
            issuer: issuer.to_vec(),
        })
    }

    /// Checks `response` (DER) at `now` (Unix seconds): a good status for this certificate,
    /// signed by the issuer or by an OCSP signer the issuer certified, valid now.
    pub fn check(&self, response: &[u8], now: i64) -> Result<Good, OcspError> {
        let basic = basic_response(response)?;
        let mut fields = Reader::new(basic.value);
        let tbs = fields.expect(der::SEQUENCE, "tbsResponseData")?;
        let (algorithm, signature) = signature_parts(&mut fields)?;
        let certs = fields.optional(der::context(0))?;
        self.check_signer(tbs.raw, algorithm, signature, certs, now)?;
        let single = self.single_response(tbs)?;
        let skew = 300;
        if single.this_update > now + skew {
            return Err(OcspError::NotYetValid);
        }
        if single.next_update.is_some_and(|next| next <= now) {
            return Err(OcspError::Expired);
        }
        match single.status {
            Status::Good => Ok(Good {
                der: response.to_vec(),
                this_update: single.this_update,
                next_update: single.next_update,
                fetched: now,
            }),
            Status::Revoked => Err(OcspError::Revoked),
            Status::Unknown => Err(OcspError::Unknown),
        }
    }

    /// The response is signed by the issuer, or by a certificate in it that the issuer signed
    /// for OCSP signing (RFC 6960 4.2.2.2) and that is valid now.
    fn check_signer(
        &self,
        tbs: &[u8],
        algorithm: &[u8],
        signature: &[u8],
        certs: Option<Item<'_>>,
        now: i64,
    ) -> Result<(), OcspError> {
        let issuer = parse(&self.issuer)?;
        let issuer_key = issuer.public_key().raw;
        match verify(issuer_key, algorithm, tbs, signature) {
            Ok(()) => return Ok(()),
            Err(OcspError::UnsupportedAlgorithm) => return Err(OcspError::UnsupportedAlgorithm),
            Err(_) => {}
        }
        let Some(certs) = certs else {
            return Err(OcspError::BadSignature);
        };
        let mut list = Reader::new(
            Reader::new(certs.value)
                .expect(der::SEQUENCE, "certs")?
                .value,
        );
        while !list.is_empty() {
            let cert_item = list.expect(der::SEQUENCE, "certificate")?;
            let mut parts = Reader::new(cert_item.value);
            let cert_tbs = parts.expect(der::SEQUENCE, "tbsCertificate")?;
            let (cert_alg, cert_sig) = signature_parts(&mut parts)?;
            let signer = parse(cert_item.raw)?;
            let for_ocsp = signer
                .extended_key_usage()
                .ok()
                .flatten()
                .is_some_and(|eku| eku.value.ocsp_signing);
            let validity = signer.validity();
            let current =
                validity.not_before.timestamp() <= now && now < validity.not_after.timestamp();
            if for_ocsp
                && current
                && signer.issuer().as_raw() == issuer.subject().as_raw()
                && verify(issuer_key, cert_alg, cert_tbs.raw, cert_sig).is_ok()
                && verify(signer.public_key().raw, algorithm, tbs, signature).is_ok()
            {
                return Ok(());
            }
        }
        Err(OcspError::BadSignature)
    }

    /// The SingleResponse about this certificate.
    fn single_response(&self, tbs: Item<'_>) -> Result<Single, OcspError> {
        let mut data = Reader::new(tbs.value);
        data.optional(der::context(0))?; // version
        data.any()?; // responderID
        data.expect(der::GENERALIZED_TIME, "producedAt")?;
        let mut responses = Reader::new(data.expect(der::SEQUENCE, "responses")?.value);
        while !responses.is_empty() {
            let mut single = Reader::new(responses.expect(der::SEQUENCE, "SingleResponse")?.value);
            let mut id = Reader::new(single.expect(der::SEQUENCE, "CertID")?.value);
            let algorithm = id.expect(der::SEQUENCE, "hashAlgorithm")?;
            let hash_oid = Reader::new(algorithm.value).expect(der::OID, "hash OID")?;
            let name_hash = id.expect(der::OCTET_STRING, "issuerNameHash")?;
            let key_hash = id.expect(der::OCTET_STRING, "issuerKeyHash")?;
            let serial = id.expect(der::INTEGER, "serialNumber")?;
            let ours = hash_oid.value == SHA1_OID
                && name_hash.value == self.name_hash.as_slice()
                && key_hash.value == self.key_hash.as_slice()
                && serial.value == self.serial.as_slice();
            if !ours {
                continue;
            }
            let status = match single.any()?.tag {
                t if t == der::context_primitive(0) => Status::Good,
                t if t == der::context(1) => Status::Revoked,
                _ => Status::Unknown,
            };
            let this_update =
                der::generalized_time(&single.expect(der::GENERALIZED_TIME, "thisUpdate")?)?;
            let next_update = match single.optional(der::context(0))? {
                Some(next) => Some(der::generalized_time(
                    &Reader::new(next.value).expect(der::GENERALIZED_TIME, "nextUpdate")?,
                )?),
                None => None,
            };
            return Ok(Single {
                status,
                this_update,
                next_update,
            });
        }
        Err(OcspError::OtherCertificate)
    }
}

enum Status {
    Good,
    Revoked,
    Unknown,
}

struct Single {
    status: Status,
    this_update: i64,
    next_update: Option<i64>,
}

/// The BasicOCSPResponse inside a successful OCSPResponse.
pub fn basic_response(response: &[u8]) -> Result<Item<'_>, OcspError> {
    let mut outer = Reader::new(
        Reader::new(response)
            .expect(der::SEQUENCE, "OCSPResponse")?
            .value,
    );
    let status = outer.expect(der::ENUMERATED, "responseStatus")?;
    match status.value {
        [0] => {}
        [code] => {
            let what = match code {
                1 => "malformedRequest",
                2 => "internalError",
                3 => "tryLater",
                5 => "sigRequired",
                6 => "unauthorized",
                _ => "unknown",
            };
            return Err(OcspError::Unsuccessful(*code, what));
        }
        _ => return Err(Malformed("responseStatus").into()),
    }
    let bytes = outer.expect(der::context(0), "responseBytes")?;
    let mut inner = Reader::new(
        Reader::new(bytes.value)
            .expect(der::SEQUENCE, "ResponseBytes")?
            .value,
    );
    if inner.expect(der::OID, "responseType")?.value != BASIC_OID {
        return Err(OcspError::NotBasic);
    }
    let basic = inner.expect(der::OCTET_STRING, "response")?;
    Ok(Reader::new(basic.value).expect(der::SEQUENCE, "BasicOCSPResponse")?)
}

/// The signature algorithm's OID and the signature bytes that follow a signed structure.
fn signature_parts<'a>(fields: &mut Reader<'a>) -> Result<(&'a [u8], &'a [u8]), OcspError> {
    let algorithm = fields.expect(der::SEQUENCE, "signatureAlgorithm")?;
    let oid = Reader::new(algorithm.value).expect(der::OID, "signature OID")?;
    let signature = fields.expect(der::BIT_STRING, "signature")?;
    match signature.value.split_first() {
        Some((0, bytes)) => Ok((oid.value, bytes)),
        _ => Err(Malformed("signature bits").into()),
    }
}

/// Verifies `signature` over `message` with the key `spki` (a DER SubjectPublicKeyInfo).
fn verify(
    spki: &[u8],
    algorithm: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), OcspError> {
    let mut outer = Reader::new(
        Reader::new(spki)
            .expect(der::SEQUENCE, "SubjectPublicKeyInfo")?
            .value,
    );
    let mut key_algorithm = Reader::new(outer.expect(der::SEQUENCE, "key algorithm")?.value);
    let _key_oid = key_algorithm.expect(der::OID, "key OID")?;
    let curve = key_algorithm.optional(der::OID)?.map(|c| c.value);
    let key = match outer
        .expect(der::BIT_STRING, "subjectPublicKey")?
        .value
        .split_first()
    {
        Some((0, key)) => key,
        _ => return Err(Malformed("key bits").into()),
    };
    const RSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
    const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    let algorithm: &dyn signature::VerificationAlgorithm = match (algorithm, curve) {
        (RSA_SHA1, _) => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        (RSA_SHA256, _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (RSA_SHA384, _) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (RSA_SHA512, _) => &signature::RSA_PKCS1_2048_8192_SHA512,
        (ECDSA_SHA256, Some(P256)) => &signature::ECDSA_P256_SHA256_ASN1,
        (ECDSA_SHA256, Some(P384)) => &signature::ECDSA_P384_SHA256_ASN1,
        (ECDSA_SHA384, Some(P256)) => &signature::ECDSA_P256_SHA384_ASN1,
        (ECDSA_SHA384, Some(P384)) => &signature::ECDSA_P384_SHA384_ASN1,
        (ED25519, _) => &signature::ED25519,
        _ => return Err(OcspError::UnsupportedAlgorithm),
    };
    UnparsedPublicKey::new(algorithm, key)
        .verify(message, signature)
        .map_err(|_| OcspError::BadSignature)
}
