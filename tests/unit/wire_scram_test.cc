// Tests for SCRAM-SHA-256 (proxy/wire/scram.h): RFC 7677's example, verifiers made by Postgres,
// client against server, and malformed input of every kind. Base64 and the verifier text parser
// have their own tests (common_base64_test.cc, common_scram_verifier_test.cc).
#include "proxy/wire/scram.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/base64.h"
#include "common/scram_verifier.h"

namespace shardgate::wire {
namespace {

using namespace std::string_literals;

// RFC 7677 section 3.
constexpr std::string_view kRfcClientNonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view kRfcSaltB64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr std::string_view kRfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view kRfcClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view kRfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

// Produced by Postgres 15: SET password_encryption='scram-sha-256';
// CREATE ROLE alice LOGIN PASSWORD 'postgres'; (also reproduced with Python's hashlib).
constexpr std::string_view kPostgresVerifier =
    "SCRAM-SHA-256$4096:4tDHuU3bh/r6oQmDlIkong==$pBnu7DV9zKTKc0xv9V/pLqHzFhrsxjLHSK3gUdNnyzU=:"
    "tnIfjOFhri9SLCGc3yMqeOI997WRH4nf3sNkvJLm+zY=";

std::string rfcSalt() {
  return *base64Decode(kRfcSaltB64);
}

void expectError(const Error& error, std::string_view sqlstate, std::string_view message) {
  EXPECT_EQ(error.severity, "FATAL");
  EXPECT_EQ(error.sqlstate, sqlstate);
  EXPECT_EQ(error.message, message);
}

// ---- verifiers ---------------------------------------------------------------------------------

TEST(ScramVerifier, Rfc7677SecretMatchesPython) {
  ScramSecret secret = makeScramSecret("pencil", rfcSalt(), 4096);
  EXPECT_EQ(
      formatScramVerifier(secret),
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
      ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=");
  EXPECT_EQ(
      formatScramVerifier(makeScramSecret("postgres", "shardgate-salt!!", 4096)),
      "SCRAM-SHA-256$4096:c2hhcmRnYXRlLXNhbHQhIQ==$kQZydttKt/k5nqjNB00ng9LG6qxc1Pi5NaVanC8k8R8="
      ":uylRWlnNcuRuD6qXVOOAInwJtgG/d+Wb0zROlTvMq9c=");
}

TEST(ScramVerifier, ReproducesPostgresVerifier) {
  auto parsed = parseScramVerifier(kPostgresVerifier);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_EQ(parsed->iterations, 4096);
  EXPECT_EQ(parsed->salt.size(), 16u);
  ScramSecret made = makeScramSecret("postgres", parsed->salt, parsed->iterations);
  EXPECT_EQ(formatScramVerifier(made), kPostgresVerifier);
  EXPECT_TRUE(scramPasswordMatches(*parsed, "postgres"));
  EXPECT_FALSE(scramPasswordMatches(*parsed, "postgres "));
  EXPECT_FALSE(scramPasswordMatches(*parsed, ""));
}

TEST(ScramVerifier, ParseFormatRoundTrip) {
  ScramSecret secret = makeScramSecret("correct horse", {}, 5000);
  EXPECT_EQ(secret.salt.size(), 16u);
  EXPECT_EQ(secret.stored_key.size(), 32u);
  EXPECT_EQ(secret.server_key.size(), 32u);
  std::string text = formatScramVerifier(secret);
  auto parsed = parseScramVerifier(text);
  ASSERT_TRUE(parsed.ok()) << parsed.error().describe();
  EXPECT_EQ(parsed->iterations, 5000);
  EXPECT_EQ(parsed->salt, secret.salt);
  EXPECT_EQ(parsed->stored_key, secret.stored_key);
  EXPECT_EQ(parsed->server_key, secret.server_key);
  EXPECT_EQ(formatScramVerifier(*parsed), text);
  EXPECT_TRUE(scramPasswordMatches(*parsed, "correct horse"));
  // Random salts differ between secrets.
  EXPECT_NE(makeScramSecret("correct horse").salt, secret.salt);
}

// ---- RFC 7677 example --------------------------------------------------------------------------

TEST(ScramRfc7677, ClientProducesTheRfcMessages) {
  ScramClient client("pencil", std::string(kRfcClientNonce), "user");
  EXPECT_EQ(client.clientFirstMessage(), kRfcClientFirst);
  auto final_message = client.handleServerFirst(kRfcServerFirst);
  ASSERT_TRUE(final_message.ok()) << final_message.error().describe();
  EXPECT_EQ(*final_message, kRfcClientFinal);
  EXPECT_FALSE(client.done());
  Status status = client.handleServerFinal(kRfcServerFinal);
  EXPECT_TRUE(status.ok()) << status.error().describe();
  EXPECT_TRUE(client.done());
}

TEST(ScramRfc7677, ServerProducesTheRfcMessages) {
  ScramServer server(makeScramSecret("pencil", rfcSalt(), 4096), std::string(kRfcServerNonce));
  auto server_first = server.handleClientFirst(kRfcClientFirst);
  ASSERT_TRUE(server_first.ok()) << server_first.error().describe();
  EXPECT_EQ(*server_first, kRfcServerFirst);
  EXPECT_FALSE(server.done());
  auto server_final = server.handleClientFinal(kRfcClientFinal, "user");
  ASSERT_TRUE(server_final.ok()) << server_final.error().describe();
  EXPECT_EQ(*server_final, kRfcServerFinal);
  EXPECT_TRUE(server.done());
}

TEST(ScramRfc7677, ServerRejectsATamperedProof) {
  ScramServer server(makeScramSecret("pencil", rfcSalt(), 4096), std::string(kRfcServerNonce));
  ASSERT_TRUE(server.handleClientFirst(kRfcClientFirst).ok());
  std::string tampered(kRfcClientFinal);
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'V' ? 'W' : 'V';
  auto result = server.handleClientFinal(tampered, "user");
  ASSERT_FALSE(result.ok());
  expectError(result.error(), "28P01", "password authentication failed for user \"user\"");
  EXPECT_FALSE(server.done());
}

TEST(ScramRfc7677, ClientRejectsAForgedServerSignature) {
  ScramClient client("pencil", std::string(kRfcClientNonce), "user");
  ASSERT_TRUE(client.handleServerFirst(kRfcServerFirst).ok());
  Status status = client.handleServerFinal("v=" + base64Encode(std::string(32, 'x')));
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().sqlstate, "28P01");
  EXPECT_FALSE(client.done());
}

TEST(ScramRfc7677, ClientWithWrongPasswordFailsTheServer) {
  ScramClient client("pencil2", std::string(kRfcClientNonce), "user");
  auto final_message = client.handleServerFirst(kRfcServerFirst);
  ASSERT_TRUE(final_message.ok());
  EXPECT_NE(*final_message, kRfcClientFinal);
  EXPECT_FALSE(client.handleServerFinal(kRfcServerFinal).ok());
}

// ---- client against server ---------------------------------------------------------------------

struct ExchangeOutcome {
  bool server_ok = false;
  bool client_ok = false;
  std::optional<Error> server_error;
};

ExchangeOutcome runExchange(ScramServer& server, ScramClient& client, std::string_view user) {
  ExchangeOutcome outcome;
  auto server_first = server.handleClientFirst(client.clientFirstMessage());
  EXPECT_TRUE(server_first.ok()) << server_first.error().describe();
  if (!server_first.ok()) return outcome;
  auto client_final = client.handleServerFirst(*server_first);
  EXPECT_TRUE(client_final.ok()) << client_final.error().describe();
  if (!client_final.ok()) return outcome;
  auto server_final = server.handleClientFinal(*client_final, user);
  if (!server_final.ok()) {
    outcome.server_error = server_final.error();
    return outcome;
  }
  outcome.server_ok = true;
  outcome.client_ok = client.handleServerFinal(*server_final).ok();
  return outcome;
}

TEST(ScramExchange, ClientAndServerAgree) {
  ScramSecret secret = makeScramSecret("s3cr3t, with = signs", {}, 4096);
  ScramServer server(secret);
  ScramClient client("s3cr3t, with = signs");
  ExchangeOutcome outcome = runExchange(server, client, "alice");
  EXPECT_TRUE(outcome.server_ok);
  EXPECT_TRUE(outcome.client_ok);
  EXPECT_TRUE(server.done());
  EXPECT_TRUE(client.done());
}

TEST(ScramExchange, ServerNonceIsRandomAndExtendsTheClientNonce) {
  ScramSecret secret = makeScramSecret("pw", "0123456789abcdef", 4096);
  ScramServer a(secret);
  ScramServer b(secret);
  auto first_a = a.handleClientFirst("n,,n=,r=clientnonce");
  auto first_b = b.handleClientFirst("n,,n=,r=clientnonce");
  ASSERT_TRUE(first_a.ok());
  ASSERT_TRUE(first_b.ok());
  EXPECT_NE(*first_a, *first_b);
  EXPECT_TRUE(first_a->starts_with("r=clientnonce"));
  // 18 random bytes as base64 = 24 characters.
  EXPECT_EQ(first_a->find(','), std::string("r=clientnonce").size() + 24);
  EXPECT_TRUE(first_a->ends_with(",s=MDEyMzQ1Njc4OWFiY2RlZg==,i=4096"));
}

TEST(ScramExchange, ClientSendsAnEmptyUserNameAndARandomNonce) {
  ScramClient a("pw");
  ScramClient b("pw");
  std::string first = a.clientFirstMessage();
  EXPECT_TRUE(first.starts_with("n,,n=,r="));
  EXPECT_EQ(first.size(), std::string("n,,n=,r=").size() + 24);
  EXPECT_EQ(first, a.clientFirstMessage());
  EXPECT_NE(first, b.clientFirstMessage());
}

TEST(ScramExchange, ClientEscapesTheUserName) {
  ScramClient client("pw", "nonce", "a,b=c");
  EXPECT_EQ(client.clientFirstMessage(), "n,,n=a=2Cb=3Dc,r=nonce");
  // The escaped name is still an acceptable client-first for our server.
  ScramServer server(makeScramSecret("pw", "salt", 4096));
  EXPECT_TRUE(runExchange(server, client, "a,b=c").client_ok);
}

// A client derives its key once per (password, salt, iterations) and reuses it: one role's salt
// with the right password, a wrong one, the right one again, and another iteration count.
TEST(ScramExchange, RepeatedExchangesWithOneSaltKeepPasswordsApart) {
  const ScramSecret secret = makeScramSecret("right", "fixed-salt-0123", 4096);
  for (const auto& [password, ok] : std::vector<std::pair<std::string, bool>>{
           {"right", true}, {"wrong", false}, {"right", true}, {"righ", false}, {"right", true}}) {
    SCOPED_TRACE(password);
    ScramServer server(secret);
    ScramClient client(password);
    EXPECT_EQ(runExchange(server, client, "carol").server_ok, ok);
  }
  ScramServer other_count(makeScramSecret("right", "fixed-salt-0123", 1024));
  ScramClient client("right");
  EXPECT_TRUE(runExchange(other_count, client, "carol").client_ok);
}

TEST(ScramExchange, WrongPasswordFails) {
  ScramServer server(makeScramSecret("right", {}, 4096));
  ScramClient client("wrong");
  ExchangeOutcome outcome = runExchange(server, client, "bob");
  EXPECT_FALSE(outcome.server_ok);
  ASSERT_TRUE(outcome.server_error.has_value());
  expectError(*outcome.server_error, "28P01", "password authentication failed for user \"bob\"");
  EXPECT_FALSE(server.done());
  // The exchange is over: a retry on the same object fails too.
  EXPECT_FALSE(server.handleClientFinal("c=biws,r=x,p=x", "bob").ok());
}

TEST(ScramExchange, WorksWithThePostgresVerifier) {
  auto secret = parseScramVerifier(kPostgresVerifier);
  ASSERT_TRUE(secret.ok());
  ScramServer server(*secret);
  ScramClient client("postgres");
  EXPECT_TRUE(runExchange(server, client, "alice").client_ok);
}

TEST(ScramExchange, BareClientFirstIsAccepted) {
  ScramServer server(makeScramSecret("pw", "salt", 4096), "SERVER");
  ScramClient client("pw", "CLIENT");
  std::string bare = client.clientFirstMessage().substr(3);
  auto server_first = server.handleClientFirst(bare);
  ASSERT_TRUE(server_first.ok()) << server_first.error().describe();
  auto client_final = client.handleServerFirst(*server_first);
  ASSERT_TRUE(client_final.ok());
  auto server_final = server.handleClientFinal(*client_final, "u");
  ASSERT_TRUE(server_final.ok()) << server_final.error().describe();
  EXPECT_TRUE(client.handleServerFinal(*server_final).ok());
}

TEST(ScramExchange, ChannelBindingFlagY) {
  // "y": the client supports channel binding but thinks we do not; correct, since we never offer
  // it. The final message must then carry c=eSws (base64 "y,,"), not c=biws.
  const ScramSecret secret = makeScramSecret("pw", "salt", 4096);
  {
    ScramServer server(secret, "S");
    ASSERT_TRUE(server.handleClientFirst("y,,n=,r=C").ok());
    auto result =
        server.handleClientFinal("c=biws,r=CS,p=" + base64Encode(std::string(32, 'p')), "u");
    ASSERT_FALSE(result.ok());
    expectError(result.error(), "08P01", "malformed SCRAM message");
  }
  {
    // With c=eSws the message is well formed and only the proof is wrong.
    ScramServer server(secret, "S");
    ASSERT_TRUE(server.handleClientFirst("y,,n=,r=C").ok());
    auto result =
        server.handleClientFinal("c=eSws,r=CS,p=" + base64Encode(std::string(32, 'p')), "u");
    ASSERT_FALSE(result.ok());
    expectError(result.error(), "28P01", "password authentication failed for user \"u\"");
  }
  {
    // And the other way round: "n,," then c=eSws is refused.
    ScramServer server(secret, "S");
    ASSERT_TRUE(server.handleClientFirst("n,,n=,r=C").ok());
    auto result =
        server.handleClientFinal("c=eSws,r=CS,p=" + base64Encode(std::string(32, 'p')), "u");
    ASSERT_FALSE(result.ok());
    expectError(result.error(), "08P01", "malformed SCRAM message");
  }
}

// ---- mock exchanges ----------------------------------------------------------------------------

std::string saltOf(std::string_view server_first) {
  size_t s = server_first.find(",s=");
  size_t i = server_first.find(",i=");
  return std::string(server_first.substr(s + 3, i - s - 3));
}

TEST(ScramMock, AlwaysFailsLikeAWrongPassword) {
  for (std::string_view password : {"", "postgres", "anything"}) {
    ScramServer server = ScramServer::mock("ghost");
    ScramClient client(std::string{password});
    ExchangeOutcome outcome = runExchange(server, client, "ghost");
    EXPECT_FALSE(outcome.server_ok);
    ASSERT_TRUE(outcome.server_error.has_value());
    expectError(*outcome.server_error, "28P01",
                "password authentication failed for user \"ghost\"");
    EXPECT_FALSE(server.done());
  }
}

TEST(ScramMock, LooksLikeARealExchange) {
  ScramServer a = ScramServer::mock("ghost");
  ScramServer b = ScramServer::mock("ghost");
  ScramServer c = ScramServer::mock("other");
  auto first_a = a.handleClientFirst("n,,n=,r=abc");
  auto first_b = b.handleClientFirst("n,,n=,r=abc");
  auto first_c = c.handleClientFirst("n,,n=,r=abc");
  ASSERT_TRUE(first_a.ok());
  ASSERT_TRUE(first_b.ok());
  ASSERT_TRUE(first_c.ok());
  // Same user, same salt (a real user's salt does not change either); other users, other salts.
  EXPECT_EQ(saltOf(*first_a), saltOf(*first_b));
  EXPECT_NE(saltOf(*first_a), saltOf(*first_c));
  EXPECT_EQ(base64Decode(saltOf(*first_a))->size(), 16u);
  EXPECT_TRUE(first_a->ends_with(",i=4096"));
  EXPECT_NE(*first_a, *first_b);  // nonces are still random
  // Malformed messages are reported as such, as in a real exchange.
  auto malformed = a.handleClientFinal("garbage", "ghost");
  ASSERT_FALSE(malformed.ok());
  EXPECT_EQ(malformed.error().sqlstate, "08P01");
}

// ---- malformed client messages -----------------------------------------------------------------

TEST(ScramServerInput, RejectsMalformedClientFirst) {
  struct Case {
    std::string message;
    std::string_view sqlstate;
  };
  const std::vector<Case> cases = {
      {"", "08P01"},
      {"x", "08P01"},
      {"n", "08P01"},
      {"n,", "08P01"},
      {"n,,", "08P01"},
      {"n,x,n=,r=abc", "08P01"},
      {"x,,n=,r=abc", "08P01"},
      {"p=tls-server-end-point,,n=,r=abc", "08P01"},
      {"p,,n=,r=abc", "08P01"},
      {"n,a=bob,n=,r=abc", "0A000"},
      {"n,,m=ext,n=,r=abc", "0A000"},
      {"n,,r=abc", "08P01"},
      {"n,,n=", "08P01"},
      {"n,,n=,", "08P01"},
      {"n,,n=,r=", "08P01"},
      {"n,,n=,r", "08P01"},
      {"n,,n=,x=abc", "08P01"},
      {"n,,n=,r=a b", "08P01"},
      {"n,,n=,r=ab\x7f", "08P01"},
      {"n,,n=,r=ab\xc3\xa9", "08P01"},
      {"n,,n=,r=abc,", "08P01"},
      {"n,,n=,r=abc,,", "08P01"},
      {"n,,n=,r=abc,1=x", "08P01"},
      {"n,,n=,r=abc,x", "08P01"},
      {"n,,n=,r=ab\0c"s, "08P01"},
      {"\0\0\0"s, "08P01"},
  };
  for (const auto& c : cases) {
    ScramServer server(makeScramSecret("pw", "salt", 4096));
    auto result = server.handleClientFirst(c.message);
    ASSERT_FALSE(result.ok()) << c.message;
    EXPECT_EQ(result.error().severity, "FATAL") << c.message;
    EXPECT_EQ(result.error().sqlstate, c.sqlstate) << c.message;
    if (c.sqlstate == "08P01") {
      EXPECT_EQ(result.error().message, "malformed SCRAM message");
      EXPECT_FALSE(result.error().detail.empty()) << c.message;
    }
    // A failed exchange stays failed.
    EXPECT_FALSE(server.handleClientFirst("n,,n=,r=abc").ok());
    EXPECT_FALSE(server.handleClientFinal("c=biws,r=abc,p=x", "u").ok());
    EXPECT_FALSE(server.done());
  }
}

TEST(ScramServerInput, AcceptsExtensionsAndAnyUserName) {
  for (std::string_view message :
       {"n,,n=,r=abc,x=ext", "n,,n=someone,r=abc", "n,,n=a=2Cb,r=abc", "y,,n=,r=abc", "n=,r=abc"}) {
    ScramServer server(makeScramSecret("pw", "salt", 4096), "S");
    auto result = server.handleClientFirst(message);
    ASSERT_TRUE(result.ok()) << message << ": " << result.error().describe();
    EXPECT_EQ(*result, "r=abcS,s=c2FsdA==,i=4096");
  }
}

TEST(ScramServerInput, RejectsMalformedClientFinal) {
  const std::string proof = base64Encode(std::string(32, 'p'));
  const std::vector<std::string> cases = {
      "",
      "garbage",
      "c=biws",
      "c=biws,",
      "c=eSws,r=CS,p=" + proof,                              // binding does not match "n,,"
      "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=CS,p=" + proof,  // "p=tls-server-end-point,,"
      "c=bi*s,r=CS,p=" + proof,                              // not base64
      "c=,r=CS,p=" + proof,
      "r=CS,c=biws,p=" + proof,   // wrong order
      "c=biws,r=C,p=" + proof,    // nonce without the server part
      "c=biws,r=CSX,p=" + proof,  // nonce too long
      "c=biws,r=XS,p=" + proof,   // another client nonce
      "c=biws,r=CS",              // no proof
      "c=biws,r=CS,",
      "c=biws,r=CS,p=",
      "c=biws,r=CS,p=" + base64Encode(std::string(31, 'p')),
      "c=biws,r=CS,p=" + base64Encode(std::string(33, 'p')),
      "c=biws,r=CS,p=" + proof.substr(1),
      "c=biws,r=CS,p=" + proof + ",x=after",  // the proof must come last
      "c=biws,r=CS,p=" + proof + ",",
      "c=biws,r=CS,p=" + proof + "\0"s,
      "c=biws,r=CS,1=x,p=" + proof,
  };
  for (const auto& message : cases) {
    ScramServer server(makeScramSecret("pw", "salt", 4096), "S");
    ASSERT_TRUE(server.handleClientFirst("n,,n=,r=C").ok());
    auto result = server.handleClientFinal(message, "u");
    ASSERT_FALSE(result.ok()) << message;
    expectError(result.error(), "08P01", "malformed SCRAM message");
    EXPECT_FALSE(result.error().detail.empty()) << message;
    EXPECT_FALSE(server.done());
  }
}

TEST(ScramServerInput, ExtensionsBeforeTheProofAreIgnored) {
  ScramServer server(makeScramSecret("pw", "salt", 4096), "S");
  ASSERT_TRUE(server.handleClientFirst("n,,n=,r=C").ok());
  auto result =
      server.handleClientFinal("c=biws,r=CS,x=ext,p=" + base64Encode(std::string(32, 'p')), "u");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().sqlstate, "28P01");  // well formed; only the proof is wrong
}

TEST(ScramServerInput, RejectsMessagesOutOfOrder) {
  ScramServer server(makeScramSecret("pw", "salt", 4096), "S");
  auto early = server.handleClientFinal("c=biws,r=CS,p=" + base64Encode(std::string(32, 'p')), "u");
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error().sqlstate, "08P01");

  ScramServer twice(makeScramSecret("pw", "salt", 4096), "S");
  ASSERT_TRUE(twice.handleClientFirst("n,,n=,r=C").ok());
  EXPECT_FALSE(twice.handleClientFirst("n,,n=,r=C").ok());

  // After a success nothing more is accepted, and done() stays true.
  ScramServer server2(makeScramSecret("pencil", rfcSalt(), 4096), std::string(kRfcServerNonce));
  ASSERT_TRUE(server2.handleClientFirst(kRfcClientFirst).ok());
  ASSERT_TRUE(server2.handleClientFinal(kRfcClientFinal, "user").ok());
  EXPECT_FALSE(server2.handleClientFinal(kRfcClientFinal, "user").ok());
}

TEST(ScramServerInput, RandomInputNeverCrashes) {
  std::mt19937 rng(7);
  const std::string alphabet = "nyrcpmsiv=,abcXYZ0123456789+/\0\x7f\xff"s;
  for (int i = 0; i < 3000; ++i) {
    std::string message(rng() % 40, '\0');
    for (auto& c : message) c = alphabet[rng() % alphabet.size()];
    ScramServer server(makeScramSecret("pw", "salt", 1), "S");
    auto first = server.handleClientFirst(message);
    ScramServer server2(makeScramSecret("pw", "salt", 1), "S");
    ASSERT_TRUE(server2.handleClientFirst("n,,n=,r=C").ok());
    auto final_result = server2.handleClientFinal("c=biws,r=CS," + message, "u");
    EXPECT_FALSE(final_result.ok());
    ScramClient client("pw", "C");
    (void)client.handleServerFirst("r=CS" + message);
    (void)client.handleServerFinal(message);
  }
}

// ---- malformed server messages -----------------------------------------------------------------

TEST(ScramClientInput, RejectsMalformedServerFirst) {
  const std::vector<std::string> cases = {
      "",
      "r=C,s=c2FsdA==,i=4096",   // the nonce must extend ours, not equal it
      "r=XS,s=c2FsdA==,i=4096",  // not our nonce
      "r=CS",
      "r=CS,s=c2FsdA==",
      "r=CS,i=4096,s=c2FsdA==",
      "r=CS,s=,i=4096",
      "r=CS,s=c2Fsd*==,i=4096",
      "r=CS,s=c2FsdA==,i=0",
      "r=CS,s=c2FsdA==,i=-1",
      "r=CS,s=c2FsdA==,i=4096x",
      "r=CS,s=c2FsdA==,i=",
      "r=CS,s=c2FsdA==,i=99999999999",
      "r=CS,s=c2FsdA==,i=4096,",
      "r=C S,s=c2FsdA==,i=4096",
      "m=ext,r=CS,s=c2FsdA==,i=4096",
      "s=c2FsdA==,r=CS,i=4096",
  };
  for (const auto& message : cases) {
    ScramClient client("pw", "C");
    auto result = client.handleServerFirst(message);
    ASSERT_FALSE(result.ok()) << message;
    expectError(result.error(), "08P01", "malformed SCRAM message");
    // The exchange is over.
    EXPECT_FALSE(client.handleServerFirst("r=CS,s=c2FsdA==,i=1").ok());
  }
  ScramClient client("pw", "C");
  EXPECT_TRUE(client.handleServerFirst("r=CS,s=c2FsdA==,i=1,x=ext").ok());
}

TEST(ScramClientInput, RejectsMalformedOrHostileServerFinal) {
  auto ready = [] {
    ScramClient client("pw", "C");
    EXPECT_TRUE(client.handleServerFirst("r=CS,s=c2FsdA==,i=1").ok());
    return client;
  };
  for (std::string_view message : {"", "v=", "v=bad*", "x=abc", "v",
                                   "v="
                                   "c2FsdA=="}) {
    ScramClient client = ready();
    Status status = client.handleServerFinal(message);
    ASSERT_FALSE(status.ok()) << message;
    EXPECT_EQ(status.error().sqlstate, "08P01") << message;
    EXPECT_FALSE(client.done());
  }
  ScramClient client = ready();
  Status status = client.handleServerFinal("e=invalid-proof");
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().sqlstate, "28P01");
  EXPECT_NE(status.error().message.find("invalid-proof"), std::string::npos);

  ScramClient early("pw", "C");
  EXPECT_FALSE(early.handleServerFinal("v=" + base64Encode(std::string(32, 'v'))).ok());
  EXPECT_FALSE(early.done());
}

}  // namespace
}  // namespace shardgate::wire
