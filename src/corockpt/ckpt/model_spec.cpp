#include "corockpt/ckpt/model_spec.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <initializer_list>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "corockpt/ckpt/device_mesh.hpp"
#include "corockpt/ckpt/format/strict_json.hpp"

namespace corockpt {

namespace {

// Ordered, so meshes keep their file order.
using Json = nlohmann::ordered_json;

constexpr std::string_view kExpertPlaceholder = "{expert}";

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string list_string(const std::vector<std::int64_t>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

std::string in_quotes_list(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + in_quotes(s);
  return out;
}

// Reads typed values out of JSON objects. The first problem is kept as `error` (its
// message starts with where it is, e.g. `unit "experts"`); after one, reads return
// defaults, so a section is read straight through and checked once at its end.
class Reader {
 public:
  std::optional<Error> error;

  void reject(const std::string& where, const std::string& message) {
    if (error) return;
    error = Error{Errc::invalid_argument, where + ": " + message, ErrorContext{.operation = "parse_model_spec"}, 0};
  }

  bool object(const Json& v, const std::string& where) {
    if (v.is_object()) return true;
    reject(where, std::string("must be a JSON object, got ") + v.type_name());
    return false;
  }

  void only_keys(const Json& obj, std::initializer_list<std::string_view> allowed, const std::string& where) {
    for (const auto& [key, value] : obj.items()) {
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      std::string known;
      for (auto k : allowed) known += (known.empty() ? "" : ", ") + in_quotes(k);
      reject(where, "unknown key " + in_quotes(key) + " (known: " + known + ")");
      return;
    }
  }

  // nullptr when absent (a problem only when `required`) or after an error.
  const Json* find(const Json& obj, std::string_view key, const std::string& where, bool required) {
    if (error) return nullptr;
    auto it = obj.find(std::string(key));
    if (it != obj.end()) return &*it;
    if (required) reject(where, "missing " + in_quotes(key));
    return nullptr;
  }

  std::string string(const Json& obj, std::string_view key, const std::string& where,
                     std::optional<std::string> fallback = std::nullopt) {
    const Json* v = find(obj, key, where, !fallback);
    if (!v) return fallback.value_or("");
    if (!v->is_string()) {
      wrong_type(key, "a string", *v, where);
      return {};
    }
    return v->get<std::string>();
  }

  std::int64_t integer(const Json& obj, std::string_view key, const std::string& where,
                       std::optional<std::int64_t> fallback = std::nullopt) {
    const Json* v = find(obj, key, where, !fallback);
    if (!v) return fallback.value_or(0);
    return integer_value(*v, in_quotes(key), where);
  }

  double number(const Json& obj, std::string_view key, const std::string& where, double fallback) {
    const Json* v = find(obj, key, where, false);
    if (!v) return fallback;
    if (!v->is_number()) {
      wrong_type(key, "a number", *v, where);
      return 0.0;
    }
    return v->get<double>();
  }

  bool boolean(const Json& obj, std::string_view key, const std::string& where, bool fallback) {
    const Json* v = find(obj, key, where, false);
    if (!v) return fallback;
    if (!v->is_boolean()) {
      wrong_type(key, "true or false", *v, where);
      return false;
    }
    return v->get<bool>();
  }

  std::vector<std::int64_t> integers(const Json& obj, std::string_view key, const std::string& where) {
    std::vector<std::int64_t> out;
    const Json* v = find(obj, key, where, true);
    if (!v) return out;
    if (!v->is_array()) {
      wrong_type(key, "a list of integers", *v, where);
      return out;
    }
    for (std::size_t i = 0; i < v->size() && !error; ++i) {
      out.push_back(integer_value((*v)[i], in_quotes(key) + "[" + std::to_string(i) + "]", where));
    }
    return out;
  }

  std::vector<std::string> strings(const Json& obj, std::string_view key, const std::string& where) {
    std::vector<std::string> out;
    const Json* v = find(obj, key, where, true);
    if (!v) return out;
    if (!v->is_array()) {
      wrong_type(key, "a list of strings", *v, where);
      return out;
    }
    for (const auto& item : *v) {
      if (!item.is_string()) {
        wrong_type(key, "a list of strings", *v, where);
        return out;
      }
      out.push_back(item.get<std::string>());
    }
    return out;
  }

 private:
  void wrong_type(std::string_view key, std::string_view expected, const Json& got, const std::string& where) {
    reject(where, in_quotes(key) + " must be " + std::string(expected) + ", got " + got.type_name() +
                      " " + got.dump());
  }

  std::int64_t integer_value(const Json& v, const std::string& what, const std::string& where) {
    const bool fits = v.is_number_integer() &&
                      (!v.is_number_unsigned() ||
                       v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
    if (!fits) {
      reject(where, what + " must be an integer, got " + v.type_name() + " " + v.dump());
      return 0;
    }
    return v.get<std::int64_t>();
  }
};

std::optional<MeshSpec> read_mesh(Reader& in, const std::string& name, const Json& v) {
  const std::string where = "mesh " + in_quotes(name);
  if (!in.object(v, where)) return std::nullopt;
  in.only_keys(v, {"shape", "dim_names"}, where);
  MeshSpec mesh{name, in.integers(v, "shape", where), in.strings(v, "dim_names", where)};
  return mesh;
}

UnitSpec read_unit(Reader& in, std::size_t index, const Json& v) {
  UnitSpec unit;
  std::string where = "units[" + std::to_string(index) + "]";
  if (!in.object(v, where)) return unit;
  unit.name = in.string(v, "name", where);
  if (!unit.name.empty()) where = "unit " + in_quotes(unit.name);
  in.only_keys(v, {"name", "prefix", "mesh", "layout", "shard_dim", "expert_dim", "num_experts", "replicate_dim"},
               where);
  unit.prefix = in.string(v, "prefix", where, "");
  unit.mesh = in.string(v, "mesh", where);
  const std::string layout = in.string(v, "layout", where, "flat");
  if (layout == "per_param") {
    unit.layout = UnitLayout::per_param;
  } else if (layout != "flat") {
    in.reject(where, "unknown layout " + in_quotes(layout) + R"( (known: "flat", "per_param"))");
  }
  unit.shard_dim = in.string(v, "shard_dim", where, "");
  unit.expert_dim = in.string(v, "expert_dim", where, "");
  unit.num_experts = in.integer(v, "num_experts", where, 0);
  unit.replicate_dim = in.string(v, "replicate_dim", where, "");
  return unit;
}

ParamSpec read_param(Reader& in, std::size_t index, const Json& v) {
  ParamSpec param;
  std::string where = "params[" + std::to_string(index) + "]";
  if (!in.object(v, where)) return param;
  in.only_keys(v, {"unit", "name", "shape", "dtype", "frozen", "buffer", "forward_mutates"}, where);
  param.unit = in.string(v, "unit", where);
  param.name = in.string(v, "name", where);
  if (!in.error) where += " (" + in_quotes(param.name) + " of unit " + in_quotes(param.unit) + ")";
  param.shape = in.integers(v, "shape", where);
  const std::string dtype = in.string(v, "dtype", where, "float32");
  if (!in.error) {
    if (auto parsed = parse_dtype(dtype)) {
      param.dtype = *parsed;
    } else {
      in.reject(where, parsed.error().message);
    }
  }
  param.frozen = in.boolean(v, "frozen", where, false);
  param.buffer = in.boolean(v, "buffer", where, false);
  if (!in.error && v.contains("forward_mutates") && !param.buffer) {
    in.reject(where, "\"forward_mutates\" is for buffers only, and this param is not one (\"buffer\": false)");
  }
  param.forward_mutates = in.boolean(v, "forward_mutates", where, true);
  return param;
}

OptimizerSpec read_optimizer(Reader& in, const Json& v) {
  OptimizerSpec opt;
  const std::string where = "optimizer";
  if (!in.object(v, where)) return opt;
  const std::string type = in.string(v, "type", where);
  if (in.error) return opt;
  if (type == "adam") {
    in.only_keys(v, {"type", "lr", "betas", "eps", "weight_decay"}, where);
    opt.type = OptimizerType::adam;
    if (v.contains("betas")) {
      const Json& betas = v["betas"];
      if (!betas.is_array() || betas.size() != 2 || !betas[0].is_number() || !betas[1].is_number()) {
        in.reject(where, "\"betas\" must be a list of two numbers, got " + betas.dump());
      } else {
        opt.betas = {betas[0].get<double>(), betas[1].get<double>()};
      }
    }
    opt.eps = in.number(v, "eps", where, opt.eps);
  } else if (type == "sgd") {
    in.only_keys(v, {"type", "lr", "momentum", "weight_decay"}, where);
    opt.type = OptimizerType::sgd;
    opt.momentum = in.number(v, "momentum", where, opt.momentum);
  } else {
    in.reject(where, "unknown optimizer type " + in_quotes(type) + R"( (known: "adam", "sgd"))");
    return opt;
  }
  opt.lr = in.number(v, "lr", where, opt.lr);
  opt.weight_decay = in.number(v, "weight_decay", where, opt.weight_decay);
  return opt;
}

Result<ModelSpec> read_spec(const Json& root) {
  Reader in;
  ModelSpec spec;
  if (!in.object(root, "model spec")) return fail(*in.error);
  in.only_keys(root, {"world_size", "meshes", "units", "params", "optimizer"}, "model spec");
  const std::int64_t world_size = in.integer(root, "world_size", "model spec");
  if (!in.error && (world_size < 1 || world_size > std::numeric_limits<int>::max())) {
    in.reject("model spec", "\"world_size\" must be >= 1, got " + std::to_string(world_size));
  }
  spec.world_size = static_cast<int>(world_size);

  if (const Json* meshes = in.find(root, "meshes", "model spec", true); meshes && in.object(*meshes, "\"meshes\"")) {
    for (const auto& [name, value] : meshes->items()) {
      if (auto mesh = read_mesh(in, name, value)) spec.meshes.push_back(std::move(*mesh));
    }
  }
  if (const Json* units = in.find(root, "units", "model spec", true)) {
    if (!units->is_array()) in.reject("model spec", std::string("\"units\" must be a list, got ") + units->type_name());
    for (std::size_t i = 0; i < units->size() && units->is_array() && !in.error; ++i) {
      spec.units.push_back(read_unit(in, i, (*units)[i]));
    }
  }
  if (const Json* params = in.find(root, "params", "model spec", true)) {
    if (!params->is_array()) in.reject("model spec", std::string("\"params\" must be a list, got ") + params->type_name());
    for (std::size_t i = 0; i < params->size() && params->is_array() && !in.error; ++i) {
      spec.params.push_back(read_param(in, i, (*params)[i]));
    }
  }
  if (const Json* optimizer = in.find(root, "optimizer", "model spec", false)) {
    spec.optimizer = read_optimizer(in, *optimizer);
  }
  if (in.error) return fail(*in.error);
  return spec;
}

// The most experts one unit may have: far above any model's (hundreds), and low enough
// that validating every expert's FQNs stays quick.
constexpr std::int64_t max_experts_per_unit = 65536;

Result<void> invalid(std::string message, std::string fqn = {}) {
  return fail(Errc::invalid_argument, std::move(message),
              ErrorContext{.fqn = std::move(fqn), .operation = "validate model spec"});
}

Result<void> validate_meshes(const ModelSpec& spec) {
  std::set<std::string_view> names;
  for (const auto& mesh : spec.meshes) {
    const std::string where = "mesh " + in_quotes(mesh.name);
    if (mesh.name.empty()) return invalid("a mesh has an empty name");
    if (!names.insert(mesh.name).second) return invalid(where + " is defined twice");
    auto built = DeviceMesh::create(mesh.shape, mesh.dim_names);
    if (!built) return invalid(where + ": " + built.error().message);
    if (built->size() != spec.world_size) {
      return invalid(where + " has " + std::to_string(built->size()) + " ranks (shape " +
                     list_string(mesh.shape) + ") but world_size is " + std::to_string(spec.world_size));
    }
  }
  return {};
}

Result<void> validate_unit(const ModelSpec& spec, const UnitSpec& unit) {
  const std::string where = "unit " + in_quotes(unit.name);
  const MeshSpec* mesh = spec.find_mesh(unit.mesh);
  if (!mesh) {
    std::vector<std::string> known;
    for (const auto& m : spec.meshes) known.push_back(m.name);
    return invalid(where + ": unknown mesh " + in_quotes(unit.mesh) + " (meshes: " + in_quotes_list(known) + ")");
  }
  auto dim_size = [&](const std::string& dim) -> std::int64_t {
    auto it = std::find(mesh->dim_names.begin(), mesh->dim_names.end(), dim);
    return it == mesh->dim_names.end() ? 0 : mesh->shape[static_cast<std::size_t>(it - mesh->dim_names.begin())];
  };
  for (const auto& [key, dim] : {std::pair<std::string_view, const std::string&>{"shard_dim", unit.shard_dim},
                                 {"expert_dim", unit.expert_dim},
                                 {"replicate_dim", unit.replicate_dim}}) {
    if (!dim.empty() && dim_size(dim) == 0) {
      return invalid(where + ": unknown dim " + in_quotes(dim) + " in " + std::string(key) + " (mesh " +
                     in_quotes(mesh->name) + " has dims " + in_quotes_list(mesh->dim_names) + ")");
    }
  }
  const bool has_placeholder = unit.prefix.find(kExpertPlaceholder) != std::string::npos;
  const bool replicated = !unit.replicate_dim.empty();
  if (unit.has_experts() && replicated) {
    return invalid(where + ": expert_dim and replicate_dim together are not supported");
  }
  if (unit.has_experts()) {
    if (unit.shard_dim.empty()) return invalid(where + ": expert_dim needs a shard_dim");
    if (unit.shard_dim == unit.expert_dim) return invalid(where + ": shard_dim and expert_dim are the same dim");
    const std::int64_t parts = dim_size(unit.expert_dim);
    if (unit.num_experts < 1) return invalid(where + ": expert_dim needs num_experts >= 1");
    if (unit.num_experts > max_experts_per_unit) {
      return invalid(where + ": num_experts " + std::to_string(unit.num_experts) + " is more than the " +
                     std::to_string(max_experts_per_unit) + " a unit may have");
    }
    if (unit.num_experts % parts != 0) {
      return invalid(where + ": num_experts " + std::to_string(unit.num_experts) +
                     " is not divisible by the size " + std::to_string(parts) + " of expert_dim " +
                     in_quotes(unit.expert_dim));
    }
    if (!has_placeholder && unit.num_experts > 1) {
      return invalid(where + ": its prefix " + in_quotes(unit.prefix) +
                     " has no {expert}, so its experts' FQNs would collide");
    }
  } else {
    if (unit.num_experts != 0) return invalid(where + ": num_experts without expert_dim");
    if (has_placeholder) return invalid(where + ": prefix " + in_quotes(unit.prefix) + " has {expert} but no expert_dim");
  }
  if (replicated) {
    if (unit.shard_dim.empty()) return invalid(where + ": replicate_dim needs a shard_dim");
    if (unit.shard_dim == unit.replicate_dim) return invalid(where + ": shard_dim and replicate_dim are the same dim");
    if (mesh->shape.size() != 2) return invalid(where + ": replicate_dim (HSDP) needs a 2-d mesh");
  }
  if (!unit.has_experts() && !replicated && !unit.shard_dim.empty() && mesh->shape.size() != 1) {
    return invalid(where + ": shard_dim alone on a " + std::to_string(mesh->shape.size()) +
                   "-d mesh (such a unit shards over all the mesh's ranks; add expert_dim or replicate_dim)");
  }
  return {};
}

Result<void> validate_units(const ModelSpec& spec) {
  std::set<std::string_view> names;
  for (std::size_t i = 0; i < spec.units.size(); ++i) {
    const UnitSpec& unit = spec.units[i];
    if (unit.name.empty()) return invalid("units[" + std::to_string(i) + "] has an empty name");
    if (!names.insert(unit.name).second) return invalid("unit " + in_quotes(unit.name) + " is defined twice");
    if (auto ok = validate_unit(spec, unit); !ok) return ok;
  }
  return {};
}

Result<void> validate_params(const ModelSpec& spec) {
  std::map<std::string, std::size_t> owner_of_fqn;     // FQN -> index in params
  std::map<std::string_view, std::size_t> flat_dtype;  // flat unit -> its first param
  std::map<std::string_view, std::int64_t> flat_bytes;  // flat unit -> its params' bytes so far, with copies
  for (std::size_t i = 0; i < spec.params.size(); ++i) {
    const ParamSpec& param = spec.params[i];
    const std::string where = "params[" + std::to_string(i) + "]";
    const UnitSpec* unit = spec.find_unit(param.unit);
    if (!unit) return invalid(where + " " + in_quotes(param.name) + ": unknown unit " + in_quotes(param.unit));
    if (param.name.empty()) return invalid(where + " of unit " + in_quotes(param.unit) + " has an empty name");
    const std::string name = fqn(*unit, param, -1);
    if (!param.buffer && !param.forward_mutates) {
      return invalid("param " + in_quotes(name) + ": forward_mutates is for buffers only", name);
    }
    for (std::int64_t s : param.shape) {
      if (s < 0) {
        return invalid("param " + in_quotes(name) + ": negative size " + std::to_string(s) + " in shape " +
                           list_string(param.shape), name);
      }
    }
    // Its bytes must fit int64 (offsets and sizes everywhere are int64), with every copy
    // an expert unit makes of it and the optimizer's states beside it.
    std::int64_t bytes = static_cast<std::int64_t>(size_of(param.dtype));
    for (std::int64_t s : param.shape) {
      if (__builtin_mul_overflow(bytes, s, &bytes)) bytes = -1;
      if (bytes < 0) break;
    }
    // The value and at most two optimizer states (Adam's), for each expert.
    std::int64_t copies = 3;
    if (unit->has_experts() && __builtin_mul_overflow(copies, unit->num_experts, &copies)) copies = -1;
    if (bytes < 0 || copies < 0 || __builtin_mul_overflow(bytes, copies, &bytes)) {
      return invalid("param " + in_quotes(name) + ": shape " + list_string(param.shape) + " of " +
                         std::string(to_string(param.dtype)) +
                         " holds more bytes than fit in 64 bits (with its experts and optimizer states)",
                     name);
    }
    // A flat unit concatenates its params: their sum must fit too.
    if (unit->layout == UnitLayout::flat && !param.buffer &&
        __builtin_add_overflow(flat_bytes[unit->name], bytes, &flat_bytes[unit->name])) {
      return invalid("flat unit " + in_quotes(unit->name) + ": its params together, up to " + in_quotes(name) +
                         ", hold more bytes than fit in 64 bits (with its experts and optimizer states)",
                     name);
    }
    const int experts = unit->has_experts() ? static_cast<int>(unit->num_experts) : 0;
    for (int e = unit->has_experts() ? 0 : -1; e < experts; ++e) {
      const std::string full = fqn(*unit, param, e);
      auto [it, inserted] = owner_of_fqn.emplace(full, i);
      if (!inserted) {
        return invalid("duplicate FQN " + in_quotes(full) + " (params[" + std::to_string(it->second) +
                           "] and params[" + std::to_string(i) + "])", full);
      }
    }
    if (unit->layout == UnitLayout::flat && !param.buffer) {
      auto [it, first] = flat_dtype.emplace(unit->name, i);
      const ParamSpec& other = spec.params[it->second];
      if (!first && other.dtype != param.dtype) {
        return invalid("flat unit " + in_quotes(unit->name) + " mixes dtypes: " + in_quotes(other.name) + " is " +
                           std::string(to_string(other.dtype)) + " but " + in_quotes(param.name) + " is " +
                           std::string(to_string(param.dtype)), name);
      }
    }
  }
  return {};
}

Result<void> validate_optimizer(const OptimizerSpec& opt) {
  auto at_least_zero = [](std::string_view key, double v) -> Result<void> {
    if (v >= 0.0) return {};
    return invalid("optimizer: " + in_quotes(key) + " must be >= 0, got " + std::to_string(v));
  };
  for (const auto& [key, v] : {std::pair<std::string_view, double>{"lr", opt.lr}, {"eps", opt.eps},
                               {"weight_decay", opt.weight_decay}, {"momentum", opt.momentum}}) {
    if (auto ok = at_least_zero(key, v); !ok) return ok;
  }
  for (double beta : opt.betas) {
    if (!(beta >= 0.0 && beta < 1.0)) {
      return invalid("optimizer: \"betas\" must lie in [0, 1), got " + std::to_string(beta));
    }
  }
  return {};
}

}  // namespace

std::string_view to_string(UnitLayout layout) { return layout == UnitLayout::flat ? "flat" : "per_param"; }

std::string_view to_string(OptimizerType type) { return type == OptimizerType::adam ? "adam" : "sgd"; }

const MeshSpec* ModelSpec::find_mesh(std::string_view name) const {
  auto it = std::find_if(meshes.begin(), meshes.end(), [&](const MeshSpec& m) { return m.name == name; });
  return it == meshes.end() ? nullptr : &*it;
}

const UnitSpec* ModelSpec::find_unit(std::string_view name) const {
  auto it = std::find_if(units.begin(), units.end(), [&](const UnitSpec& u) { return u.name == name; });
  return it == units.end() ? nullptr : &*it;
}

std::string fqn(const UnitSpec& unit, const ParamSpec& param, int expert) {
  std::string prefix = unit.prefix;
  if (expert >= 0) {
    const std::string index = std::to_string(expert);
    for (auto at = prefix.find(kExpertPlaceholder); at != std::string::npos;
         at = prefix.find(kExpertPlaceholder, at + index.size())) {
      prefix.replace(at, kExpertPlaceholder.size(), index);
    }
  }
  return prefix + param.name;
}

Result<void> validate(const ModelSpec& spec) {
  if (spec.world_size < 1) return invalid("world_size must be >= 1, got " + std::to_string(spec.world_size));
  if (auto ok = validate_meshes(spec); !ok) return ok;
  if (auto ok = validate_units(spec); !ok) return ok;
  if (auto ok = validate_params(spec); !ok) return ok;
  if (spec.optimizer) {
    if (auto ok = validate_optimizer(*spec.optimizer); !ok) return ok;
  }
  return {};
}

Result<ModelSpec> parse_model_spec(std::string_view json_text) {
  try {
    // Checked as strictly as the metadata (a key given twice is an error, not "the last
    // one wins"); then parsed again keeping the order of the keys (the meshes' order).
    if (auto strict = detail::parse_strict_json(json_text); !strict) {
      return fail(Errc::invalid_argument, strict.error().message, ErrorContext{.operation = "parse_model_spec"});
    }
    Json root;
    try {
      root = Json::parse(json_text.begin(), json_text.end());
    } catch (const Json::parse_error& e) {
      return fail(Errc::invalid_argument, std::string("malformed JSON: ") + e.what(),
                  ErrorContext{.operation = "parse_model_spec"});
    }
    auto spec = read_spec(root);
    if (!spec) return spec;
    if (auto ok = validate(*spec); !ok) return fail(ok.error());
    return spec;
  } catch (...) {  // nothing above should throw; if it does, it stays inside
    return fail(error_from_exception(std::current_exception()));
  }
}

Result<ModelSpec> load_model_spec(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return fail(system_error(errno, "load_model_spec", path));
  std::string text;
  char chunk[65536];
  for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, file)) > 0;) text.append(chunk, n);
  const bool read_failed = std::ferror(file) != 0;
  std::fclose(file);
  if (read_failed) return fail(system_error(EIO, "load_model_spec", path));
  auto spec = parse_model_spec(text);
  if (!spec) return fail(spec.error().with_path(path));
  return spec;
}

}  // namespace corockpt
