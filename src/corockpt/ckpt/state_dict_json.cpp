#include "corockpt/ckpt/state_dict_json.hpp"

namespace corockpt {

namespace {

nlohmann::json describe_value(const StateValue& value, bool mark_full) {
  if (is_dtensor(value)) {
    const auto& d = std::get<DTensor>(value);
    nlohmann::json placements = nlohmann::json::array();
    for (const auto& p : d.placements) placements.push_back(p.to_string());
    return {{"dtype", to_string(d.local.dtype)},  {"global_shape", d.global_shape},
            {"mesh", d.mesh.ranks()},             {"placements", placements},
            {"local_shape", d.box.sizes},         {"offsets", d.box.offsets}};
  }
  const auto& t = std::get<TensorView>(value);
  nlohmann::json out = {{"dtype", to_string(t.dtype)}, {"shape", t.shape}};
  if (mark_full) out["full"] = true;
  return out;
}

nlohmann::json describe_group(const ParamGroup& group) {
  const OptimizerSpec& h = group.hyperparameters;
  nlohmann::json out = {{"lr", h.lr}, {"weight_decay", h.weight_decay}};
  if (h.type == OptimizerType::adam) {
    out["betas"] = {h.betas[0], h.betas[1]};
    out["eps"] = h.eps;
  } else {
    out["momentum"] = h.momentum;
  }
  out["params"] = group.params;
  return out;
}

}  // namespace

nlohmann::json describe_state_dict(const StateDict& state_dict, int rank) {
  nlohmann::json model = nlohmann::json::object();
  for (const auto& [fqn, value] : state_dict.model) model[fqn] = describe_value(value, true);
  nlohmann::json state = nlohmann::json::object();
  for (const auto& [fqn, states] : state_dict.optim.state) {
    nlohmann::json entry = nlohmann::json::object();
    for (const auto& [name, value] : states) entry[name] = describe_value(value, name != "step");
    state[fqn] = std::move(entry);
  }
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : state_dict.optim.param_groups) groups.push_back(describe_group(g));
  return {{"rank", rank}, {"model", model}, {"optim", {{"state", state}, {"param_groups", groups}}}};
}

}  // namespace corockpt
