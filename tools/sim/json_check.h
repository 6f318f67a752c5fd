// JsonCheck: a tiny strict JSON reader for the simulator's tests, so they
// can assert that a statistics line parses and read its top-level numbers
// without a JSON library. Test-only.
#ifndef PKSM_TOOLS_SIM_JSON_CHECK_H_
#define PKSM_TOOLS_SIM_JSON_CHECK_H_

#include <cctype>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

namespace pksm::sim::testing {

class JsonCheck {
 public:
  // Parses `text` as exactly one JSON object (surrounding whitespace
  // allowed). Top-level numeric members are kept for Number().
  explicit JsonCheck(std::string_view text) : s_(text) {
    SkipWs();
    ok_ = Peek() == '{' && Value(/*top=*/true);
    SkipWs();
    ok_ = ok_ && i_ == s_.size();
  }
  bool ok() const { return ok_; }
  bool Has(const std::string& key) const { return keys_.count(key) != 0; }
  // The top-level member `key` as a number; NaN-free: -1 when absent or not a number.
  double Number(const std::string& key) const {
    auto it = numbers_.find(key);
    return it == numbers_.end() ? -1 : it->second;
  }

 private:
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void SkipWs() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool Literal(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool String(std::string* out) {
    if (Peek() != '"') return false;
    ++i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (static_cast<unsigned char>(s_[i_]) < 0x20) return false;
      if (s_[i_] == '\\') {
        ++i_;
        if (i_ >= s_.size()) return false;
      }
      if (out) out->push_back(s_[i_]);
      ++i_;
    }
    if (i_ >= s_.size()) return false;
    ++i_;
    return true;
  }
  bool NumberToken(double* out) {
    const size_t start = i_;
    if (Peek() == '-') ++i_;
    if (!std::isdigit(static_cast<unsigned char>(Peek()))) return false;
    while (std::isdigit(static_cast<unsigned char>(Peek()))) ++i_;
    if (Peek() == '.') {
      ++i_;
      if (!std::isdigit(static_cast<unsigned char>(Peek()))) return false;
      while (std::isdigit(static_cast<unsigned char>(Peek()))) ++i_;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++i_;
      if (Peek() == '+' || Peek() == '-') ++i_;
      if (!std::isdigit(static_cast<unsigned char>(Peek()))) return false;
      while (std::isdigit(static_cast<unsigned char>(Peek()))) ++i_;
    }
    *out = std::strtod(std::string(s_.substr(start, i_ - start)).c_str(), nullptr);
    return true;
  }
  bool Value(bool top = false, const std::string* key = nullptr) {
    SkipWs();
    const char c = Peek();
    if (c == '{') {
      ++i_;
      SkipWs();
      if (Peek() == '}') {
          ++i_;
          return true;
        }
      for (;;) {
        SkipWs();
        std::string k;
        if (!String(&k)) return false;
        SkipWs();
        if (Peek() != ':') return false;
        ++i_;
        if (top) keys_[k] = true;
        if (!Value(false, top ? &k : nullptr)) return false;
        SkipWs();
        if (Peek() == ',') { ++i_; continue; }
        if (Peek() == '}') {
          ++i_;
          return true;
        }
        return false;
      }
    }
    if (c == '[') {
      ++i_;
      SkipWs();
      if (Peek() == ']') {
          ++i_;
          return true;
        }
      for (;;) {
        if (!Value()) return false;
        SkipWs();
        if (Peek() == ',') { ++i_; continue; }
        if (Peek() == ']') {
          ++i_;
          return true;
        }
        return false;
      }
    }
    if (c == '"') return String(nullptr);
    if (c == 't') return Literal("true");
    if (c == 'f') return Literal("false");
    if (c == 'n') return Literal("null");
    double d = 0;
    if (!NumberToken(&d)) return false;
    if (key) numbers_[*key] = d;
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
  bool ok_ = false;
  std::map<std::string, bool> keys_;
  std::map<std::string, double> numbers_;
};

}  // namespace pksm::sim::testing

#endif  // PKSM_TOOLS_SIM_JSON_CHECK_H_
