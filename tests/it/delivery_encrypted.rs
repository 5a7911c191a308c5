//! Encrypted posting (`delivery.encryption: openpgp`) against GnuPG 2.2
//! playing the pattoo server's part: gpg must read what the agent makes at
//! every step of the exchange, and the agent must read what gpg makes.

use pattoo_agentd::delivery::openpgp::{self, Keyring};

use crate::common;

const AGENT_ID: &str = "5e1f0a9b7e8d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f001";
const SERVER_ID: &str = "9a0f1e2d3c4b5a69788796a5b4c3d2e1f0015e1f0a9b7e8d1c2b3a4f5e6d7c8b";

#[test]
fn gpg_and_the_agent_read_each_others_messages_at_every_step_of_the_exchange() {
    let Some(gpg) = common::gpg::gpg(
        "gpg_and_the_agent_read_each_others_messages_at_every_step_of_the_exchange",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keyring =
        Keyring::open_or_create(&dir.path().join("keys"), "pattoo_agentd_self", AGENT_ID).unwrap();

    // Step 1: the server imports the agent's key and finds it by the agent id.
    gpg.import(keyring.public_armored());
    assert_eq!(gpg.fingerprint(AGENT_ID), keyring.fingerprint());

    // Step 2: the server encrypts a nonce to it and sends its own key.
    let nonce = "4b5a69788796a5b4c3d2e1f0015e1f0a9b7e8d1c2b3a4f5e6d7c8b9a0f1e2d3c";
    let encrypted_nonce = gpg.encrypt_to(AGENT_ID, nonce.as_bytes());
    assert_eq!(keyring.decrypt(&encrypted_nonce).unwrap(), nonce.as_bytes());
    let server_fingerprint = gpg.make_key("pattoo_api_agentd", SERVER_ID);
    let server_key = openpgp::read_public_key(&gpg.export(SERVER_ID)).unwrap();
    assert!(openpgp::names(&server_key, SERVER_ID));
    assert!(
        server_key.public_subkeys.is_empty(),
        "the server's key is one RSA primary key that encrypts, as gpg makes it"
    );

    // Step 3: the symmetric key to the server's key, the nonce under it.
    let symmetric_key = openpgp::session_key();
    let encrypted_key = openpgp::encrypt_to(&server_key, symmetric_key.as_bytes()).unwrap();
    assert_eq!(gpg.decrypt(&encrypted_key), symmetric_key.as_bytes());
    let packets = gpg.list_packets(&encrypted_key);
    assert!(
        packets.contains(&format!("keyid {}", &server_fingerprint[24..])),
        "{packets}"
    );
    let sealed_nonce = openpgp::encrypt_symmetric(nonce.as_bytes(), &symmetric_key).unwrap();
    assert_eq!(
        gpg.decrypt_symmetric(&sealed_nonce, &symmetric_key),
        nonce.as_bytes()
    );
    let packets = gpg.list_packets(&sealed_nonce);
    assert!(
        packets.contains(":symkey enc packet: version 4"),
        "{packets}"
    );
    assert!(
        packets.contains("mdc_method: 2"),
        "SEIPD v1 with MDC: {packets}"
    );
    assert!(
        packets.contains("aead 0") && !packets.contains("aead encrypted"),
        "no AEAD: {packets}"
    );

    // Step 4: the post body under the symmetric key.
    let data =
        format!(r#"{{"data": {{"pattoo_agent_id": "{AGENT_ID}"}}, "source": "{AGENT_ID}"}}"#);
    let sealed = openpgp::encrypt_symmetric(data.as_bytes(), &symmetric_key).unwrap();
    assert_eq!(
        gpg.decrypt_symmetric(&sealed, &symmetric_key),
        data.as_bytes()
    );

    // And what gpg seals with a passphrase the agent opens.
    let from_gpg = gpg.encrypt_symmetric(data.as_bytes(), &symmetric_key);
    assert_eq!(
        openpgp::decrypt_symmetric(&from_gpg, &symmetric_key).unwrap(),
        data.as_bytes()
    );
}
