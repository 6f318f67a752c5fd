// JsonObject: builds one JSON object on one line, keys in insertion order.
// Enough for pksm-host's report; not a general JSON library.
#ifndef PKSM_TOOLS_HOST_JSON_H_
#define PKSM_TOOLS_HOST_JSON_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace pksm::host {

class JsonObject {
 public:
  JsonObject& Add(std::string_view key, uint64_t v);
  JsonObject& Add(std::string_view key, int64_t v);
  JsonObject& Add(std::string_view key, uint32_t v) { return Add(key, static_cast<uint64_t>(v)); }
  JsonObject& Add(std::string_view key, int v) { return Add(key, static_cast<int64_t>(v)); }
  JsonObject& Add(std::string_view key, double v);  // non-finite -> null
  JsonObject& Add(std::string_view key, bool v);
  JsonObject& Add(std::string_view key, std::string_view v);
  JsonObject& Add(std::string_view key, const char* v) { return Add(key, std::string_view(v)); }
  JsonObject& AddNull(std::string_view key);
  // `json` must already be valid JSON (an object from ToString(), a number).
  JsonObject& AddRaw(std::string_view key, std::string_view json);

  std::string ToString() const { return "{" + body_ + "}"; }

  static std::string Quote(std::string_view s);

 private:
  void Key(std::string_view key);
  std::string body_;
};

}  // namespace pksm::host

#endif  // PKSM_TOOLS_HOST_JSON_H_
