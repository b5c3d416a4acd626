//! Signed JSON Web Tokens for provider auth: ES256 (APNs provider tokens) and RS256 (Google
//! service-account assertions), over ring.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::Value;

use crate::crypto;
use crate::error::GatewayError;

fn key_error(field: &str, reason: impl std::fmt::Display) -> GatewayError {
    GatewayError::Config {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// `header.claims` in base64url, the part a JWT signature covers.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        crypto::b64url(header.to_string().as_bytes()),
        crypto::b64url(claims.to_string().as_bytes())
    )
}

/// A P-256 key from a PKCS#8 PEM (an APNs `.p8` file) that signs ES256 tokens.
pub struct Es256Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Es256Signer {
    pub fn from_pem(field: &str, pem: &str) -> Result<Es256Signer, GatewayError> {
        let der = crypto::pem_to_der(pem).ok_or_else(|| key_error(field, "not a PEM block"))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| key_error(field, format!("not a PKCS#8 P-256 key: {e}")))?;
        Ok(Es256Signer { key, rng })
    }

    /// A compact JWT with `{"alg":"ES256","kid":key_id}` over `claims`.
    pub fn sign(&self, key_id: &str, claims: &Value) -> Result<String, GatewayError> {
        let header = serde_json::json!({ "alg": "ES256", "kid": key_id });
        let input = signing_input(&header, claims);
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| key_error("es256", "signing failed"))?;
        Ok(format!("{input}.{}", crypto::b64url(sig.as_ref())))
    }
}

/// An RSA key from a PKCS#8 PEM (a service account's `private_key`) that signs RS256 tokens.
pub struct Rs256Signer {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl Rs256Signer {
    pub fn from_pem(field: &str, pem: &str) -> Result<Rs256Signer, GatewayError> {
        let der = crypto::pem_to_der(pem).ok_or_else(|| key_error(field, "not a PEM block"))?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| key_error(field, format!("not a PKCS#8 RSA key: {e}")))?;
        Ok(Rs256Signer {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// A compact JWT with `{"alg":"RS256","typ":"JWT","kid":key_id}` over `claims`.
    pub fn sign(&self, key_id: &str, claims: &Value) -> Result<String, GatewayError> {
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": key_id });
        let input = signing_input(&header, claims);
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| key_error("rs256", "signing failed"))?;
        Ok(format!("{input}.{}", crypto::b64url(&sig)))
    }
}

/// The header and claims of a compact JWT whose signature `verify` accepts. For receivers
/// (and the test fakes that play them): `verify` gets the signing input and the signature.
pub fn decode_verified(
    token: &str,
    verify: impl FnOnce(&[u8], &[u8]) -> bool,
) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (header, claims, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }

    let input = format!("{header}.{claims}");
    let sig = crypto::b64url_decode(sig)?;
    if !verify(input.as_bytes(), &sig) {
        return None;
    }
    let header = serde_json::from_slice(&crypto::b64url_decode(header)?).ok()?;
    let claims = serde_json::from_slice(&crypto::b64url_decode(claims)?).ok()?;
    Some((header, claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use ring::signature::KeyPair;

    fn pem(der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    #[test]
    fn es256_tokens_verify_with_the_public_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default();
        let signer = Es256Signer::from_pem("k", &pem(&pkcs8));
        assert!(signer.is_ok());
        let Ok(signer) = signer else { return };
        let public = signer.key.public_key().as_ref().to_vec();

        let token = signer.sign("KEY123", &serde_json::json!({"iss": "TEAM", "iat": 1}));
        let token = token.unwrap_or_default();
        let key = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public);
        let decoded = decode_verified(&token, |m, s| key.verify(m, s).is_ok());
        let (header, claims) = decoded.unwrap_or_default();
        assert_eq!(header["kid"], "KEY123");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(claims["iss"], "TEAM");

        let tampered = token.replacen('.', ".e30", 1);
        assert!(decode_verified(&tampered, |m, s| key.verify(m, s).is_ok()).is_none());
    }

    #[test]
    fn garbage_keys_are_config_errors() {
        assert!(Es256Signer::from_pem("apns.key", "nope").is_err());
        assert!(Rs256Signer::from_pem("fcm.key", &pem(b"\x30\x00")).is_err());
    }
}
