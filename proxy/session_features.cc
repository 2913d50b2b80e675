// A lexical scan for session-level features: words outside literals and comments, per statement.
#include "proxy/session_features.h"

#include <cctype>
#include <string>
#include <vector>

#include "proxy/session_settings.h"

namespace shardgate::proxy {

namespace {

bool isWordChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$';
}

// Words of one statement, lower-cased.
class StatementWords {
 public:
  void add(std::string word) { words_.push_back(std::move(word)); }
  void clear() { words_.clear(); }
  bool empty() const { return words_.empty(); }
  const std::string& at(size_t i) const {
    static const std::string kNone;
    return i < words_.size() ? words_[i] : kNone;
  }
  size_t size() const { return words_.size(); }

 private:
  std::vector<std::string> words_;
};

// Settings a session may change under transaction pooling: Postgres reports their value, so
// shardgate re-applies them on the next connection.
bool isReportedName(const std::string& name, const std::string& next) {
  if (name == "time" && next == "zone") return true;  // SET TIME ZONE
  if (name == "names") return true;                   // SET NAMES = client_encoding
  return isSyncedReportedSetting(name);
}

std::string judgeStatement(const StatementWords& w) {
  const std::string& first = w.at(0);
  if (first == "listen") return "LISTEN";
  if (first == "prepare" && w.at(1) != "transaction") return "SQL PREPARE";
  if (first == "declare") {
    for (size_t i = 1; i + 1 < w.size(); ++i) {
      if (w.at(i) == "with" && w.at(i + 1) == "hold") return "WITH HOLD cursor";
    }
  }
  if (first == "create") {
    size_t i = 1;
    if (w.at(i) == "local" || w.at(i) == "global") ++i;
    if (w.at(i) == "temp" || w.at(i) == "temporary") return "temporary table";
  }
  if (first == "set" || first == "reset") {
    size_t i = 1;
    if (w.at(i) == "local") return "";  // stays inside its transaction
    if (w.at(i) == "session" && w.at(i + 1) != "authorization") ++i;
    const std::string& name = w.at(i);
    if (name == "transaction" || name == "constraints") return "";  // transaction-scoped
    if (!isReportedName(name, w.at(i + 1))) return first + " " + name;
  }
  for (size_t i = 0; i < w.size(); ++i) {
    const std::string& word = w.at(i);
    if (word.rfind("pg_advisory_lock", 0) == 0 || word.rfind("pg_try_advisory_lock", 0) == 0) {
      return "session advisory lock";
    }
    if (word == "into" && (w.at(i + 1) == "temp" || w.at(i + 1) == "temporary")) {
      return "temporary table";
    }
  }
  return "";
}

}  // namespace

std::string sessionFeatureIn(std::string_view sql) {
  StatementWords words;
  size_t i = 0;
  const size_t n = sql.size();
  while (i < n) {
    char c = sql[i];
    if (c == '\'' || c == '"') {  // literal or quoted identifier: skip it whole
      char quote = c;
      for (++i; i < n; ++i) {
        if (sql[i] == quote) {
          if (i + 1 < n && sql[i + 1] == quote) {
            ++i;
            continue;
          }
          break;
        }
      }
      ++i;
    } else if (c == '-' && i + 1 < n && sql[i + 1] == '-') {
      while (i < n && sql[i] != '\n') ++i;
    } else if (c == '/' && i + 1 < n && sql[i + 1] == '*') {
      size_t end = sql.find("*/", i + 2);
      i = end == std::string_view::npos ? n : end + 2;
    } else if (c == ';') {
      if (auto reason = judgeStatement(words); !reason.empty()) return reason;
      words.clear();
      ++i;
    } else if (isWordChar(c)) {
      size_t start = i;
      while (i < n && isWordChar(sql[i])) ++i;
      std::string word(sql.substr(start, i - start));
      for (char& ch : word) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      words.add(std::move(word));
    } else {
      ++i;
    }
  }
  return judgeStatement(words);
}

}  // namespace shardgate::proxy
